"""`glide jobs list|status|logs|stop`: the Ray jobs of a cluster (those `glide submit` started and any other)."""
from __future__ import annotations

import json
import sys
import time

from pipeline.commands.submit_cmd import add_address_option


def register(subparsers, common) -> None:
    p = subparsers.add_parser("jobs", parents=[common], help="list, inspect, follow or stop Ray jobs on a cluster",
                              description="The Ray jobs of a cluster (Ray Jobs API; the address as for glide submit).")
    sub = p.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)

    def action(name: str, func, help: str, description: str, job_id: bool = True):
        parser = sub.add_parser(name, parents=[common], help=help, description=description)
        add_address_option(parser)
        if job_id:
            parser.add_argument("job_id", metavar="JOB_ID")
        parser.set_defaults(func=func)
        return parser

    action("list", run_list, "every job: id, status, start time, command",
           "List the cluster's jobs, newest first.", job_id=False) \
        .add_argument("--json", action="store_true", help="one JSON object per job")
    action("status", run_status, "one job's status, exit code and reason",
           "Print a job's status; exit code 0 whatever the status (see glide submit).") \
        .add_argument("--json", action="store_true", help="the job's details as JSON")
    action("logs", run_logs, "a job's output so far, or follow it to the end",
           "Print a job's logs; --follow streams them until the job ends and then exits with its status "
           "as glide submit does (0, 2 bad input, 1 failure).") \
        .add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    action("stop", run_stop, "stop a running job", "Ask Ray to stop a job (SIGTERM to its driver, then SIGKILL).") \
        .add_argument("--wait", action="store_true", help="return once the job has stopped")


def _client(args):
    from cluster import jobs

    jobs.quiet_ray_client(args.debug)
    return jobs.connect(args.address or args.ray_address)


def _when(ms) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _details(info) -> dict:
    fields = ("submission_id", "job_id", "status", "entrypoint", "message", "start_time", "end_time",
              "driver_exit_code", "metadata", "entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory",
              "entrypoint_resources")
    return {k: (str(v) if k == "status" else v) for k in fields if (v := getattr(info, k, None)) is not None}


def run_list(args) -> int:
    infos = sorted(_client(args).list_jobs(), key=lambda i: i.start_time or 0, reverse=True)
    if args.json:
        for info in infos:
            print(json.dumps(_details(info)))
        return 0
    rows = [(info.submission_id or info.job_id or "-", str(info.status), _when(info.start_time),
             (info.metadata or {}).get("glide_command") or info.entrypoint) for info in infos]
    if not rows:
        print("no jobs")
        return 0
    widths = [max(len(r[i]) for r in rows + [("JOB", "STATUS", "STARTED", "")]) for i in range(3)]
    print(f"{'JOB':<{widths[0]}}  {'STATUS':<{widths[1]}}  {'STARTED':<{widths[2]}}  COMMAND")
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")
    return 0


def run_status(args) -> int:
    from cluster import jobs

    info = jobs.job_info(_client(args), args.job_id)
    if args.json:
        print(json.dumps(_details(info)))
    else:
        print(jobs.describe(info))
    return 0


def run_logs(args) -> int:
    from cluster import jobs

    client = _client(args)
    jobs.job_info(client, args.job_id)  # an unknown id is bad input, named
    if not args.follow:
        sys.stdout.write(client.get_job_logs(args.job_id))
        return 0
    info = jobs.follow(client, args.job_id, sys.stdout)
    print(f"glide jobs: {jobs.describe(info)}", file=sys.stderr)
    return jobs.exit_code(info)


def run_stop(args) -> int:
    from cluster import jobs

    client = _client(args)
    info = jobs.job_info(client, args.job_id)
    if info.status.is_terminal():
        print(f"glide jobs: {jobs.describe(info)} (nothing to stop)", file=sys.stderr)
        return 0
    client.stop_job(args.job_id)
    if args.wait:
        info = jobs.wait(client, args.job_id)
        print(f"glide jobs: {jobs.describe(info)}", file=sys.stderr)
    else:
        print(f"glide jobs: stopping {args.job_id}", file=sys.stderr)
    return 0
