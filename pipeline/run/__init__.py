"""`glide run PIPELINE.yaml`: the stages a pipeline config names, in order, each skipped when its
recorded fingerprint (resolved config + input digests + output digest) says it is done.

    config.py       the config's `run` section (where outputs go, which stages, their settings)
    fingerprint.py  digests of stage inputs and outputs; the per-stage records under OUT/pipeline-state
    stages.py       the stage list: one entry per stage (what it reads, writes, and how it runs)
    plan.py         run or reuse, and why, for every stage (--from, --until, --dry-run)
    execute.py      runs the plan in one Ray session
"""
