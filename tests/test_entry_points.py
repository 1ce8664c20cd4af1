"""The entry points as a person meets them: --help answers everywhere, and no traceback for a closed
pipe, Ctrl-C or a server that is not there."""

import argparse
import signal
import subprocess
import sys

import pytest

from console import cli
from console.localcluster import build_parser as demo_parser
from console.localservers import free_port
from producer.__main__ import build_parser as producer_parser
from tests.celery_worker import ROOT, settings_env

SUBCOMMANDS = sorted(next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)


def _unreachable_env():
    env = settings_env(cli.Settings(mongodb_url=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"))
    env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    return env


@pytest.mark.parametrize("argv", [["-m", "producer", "--help"], ["-m", "console.cli", "--help"]])
def test_help_answers_and_starts_nothing_even_with_no_server(argv):
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=_unreachable_env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "xit codes" in done.stdout and done.stderr == ""


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_help_exits_0_with_its_options_and_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as ended:
        cli.build_parser().parse_args([command, "--help"])
    assert ended.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes: 0 done" in out and "3 MongoDB unreachable" in out


@pytest.mark.parametrize(
    "parser", [cli.build_parser(), producer_parser(), demo_parser()], ids=["cli", "producer", "demo"]
)
def test_every_option_says_what_it_does(parser):
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    silent = [(p.prog, a.dest) for p in parsers for a in p._actions
              if not isinstance(a, argparse._SubParsersAction) and not a.help]  # fmt: skip
    assert silent == []


@pytest.mark.slow
def test_a_producer_with_no_server_says_so_in_one_line_and_exits_3():
    done = subprocess.run([sys.executable, "-m", "producer"], cwd=ROOT, env=_unreachable_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if "cannot reach MongoDB" in line or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach MongoDB at mongodb://127.0.0.1:"), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.integration
@pytest.mark.parametrize("reader", ["head -1", "(exec 0<&-; sleep 3)"], ids=["head", "closed-at-once"])
def test_status_into_a_closed_pipe_prints_no_traceback(settings, db, reader):
    env = settings_env(settings)
    done = subprocess.run(["bash", "-c", f"{sys.executable} -m console.cli status | {reader}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
    if reader.startswith("head"):
        assert done.stdout.startswith("feedback: 0 usable")


@pytest.mark.integration
def test_ctrl_c_in_watch_ends_it_with_130_and_no_traceback(settings, db):
    from eduranker.store import ensure_indexes, jobs

    ensure_indexes(db)
    jobs.create_job(db, "j-watched", trigger={})
    argv = [sys.executable, "-m", "console.cli", "watch", "j-watched"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    # Ctrl-C as in a terminal: SIGINT at its default in the child even where the suite itself was started
    # with it ignored (a background job of a script), which Python would inherit and keep ignoring.
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    watch = subprocess.Popen(argv, cwd=ROOT, env=settings_env(settings), preexec_fn=default_sigint, **pipes)
    try:
        assert watch.stdout.readline().strip() == "job j-watched: queued"  # it is following the job now
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 130 and "Traceback" not in err, err
