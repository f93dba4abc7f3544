"""The one progress reporter: plain periodic lines off a terminal (logs, Ray Jobs), a tqdm bar on one."""
import io

from shards import Progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_it_prints_plain_lines_with_rate_and_eta_never_redraws():
    out = io.StringIO()
    with Progress("embed", 1000, unit="rows", stream=out, interval=0) as p:
        p.update(250)
        p.note(shards="1/4")
        p.set(500)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3
    assert lines[0].startswith("embed: 250/1,000 rows (25%), ") and "rows/s, ETA " in lines[0]
    assert lines[1].startswith("embed: 500/1,000 rows (50%)") and lines[1].endswith("shards 1/4")
    assert "elapsed" in lines[2] and "ETA" not in lines[2]


def test_lines_are_spaced_by_the_interval_and_the_final_line_always_comes():
    out = io.StringIO()
    with Progress("train", 100, unit="steps", stream=out, interval=3600) as p:
        for _ in range(100):
            p.update()
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]
    assert out.getvalue().startswith("train: 100/100 steps (100%)")


def test_a_resumed_run_counts_earlier_work_in_the_total_but_not_in_the_rate():
    out = io.StringIO()
    p = Progress("ingest", 100, stream=out, interval=0, initial=90)
    assert p.done == 90 and p.rate() == 0
    p.close()


def test_on_a_terminal_it_is_a_tqdm_bar():
    term = FakeTerminal()
    with Progress("sample", 10, unit="steps", stream=term) as p:
        p.update(10)
    assert "\r" in term.getvalue() and "10/10" in term.getvalue()


def test_without_a_total_it_counts_and_rates():
    out = io.StringIO()
    with Progress("ingest: URL lists read", stream=out, interval=0) as p:
        p.set(1200)
    assert out.getvalue().splitlines()[0].startswith("ingest: URL lists read: 1,200 rows, ")
