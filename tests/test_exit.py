"""The `peersync` program leaves without the interpreter's teardown once its command is done
(__main__.entry): the exit status, the whole output, exit functions and temporary directories are
as Python's own exit leaves them; a thread still working is waited for, as Python does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import atexit, sys, tempfile, threading, time
    import peersync.__main__ as m

    class Teardown:
        def __del__(self):
            sys.stderr.write("teardown ran\\n")

    kept = Teardown()  # freed only by the interpreter's teardown
    scratch = tempfile.TemporaryDirectory()  # removed by its weakref finalizer at exit
    open(scratch.name + "/f", "w").close()

    def command():
        atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
        print("x" * 200000)  # more than a pipe's buffer: written while the reader reads
        print(scratch.name)
        mode = sys.argv[1]
        if mode == "thread":  # a thread still writing when the command returns
            def late():
                time.sleep(0.5)
                sys.stderr.write("thread done\\n")
            threading.Thread(target=late).start()
        if mode == "message":
            sys.exit("bad input: say what is wrong")
        if mode != "none":
            sys.exit(int(mode) if mode != "thread" else 4)

    m.main = command
    m.entry()
""")


def run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


@pytest.mark.parametrize("mode, code", [("none", 0), ("0", 0), ("3", 3), ("130", 130)])
def test_a_finished_command_leaves_at_once_with_its_status_output_and_exit_functions(mode, code, tmp_path):
    done = run(mode)
    assert done.returncode == code, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "x" * 200000 and len(lines) == 2  # all of it, flushed
    assert "atexit ran" in done.stderr
    assert not __import__("os").path.exists(lines[1])  # the temporary directory is gone
    assert "teardown ran" not in done.stderr  # the teardown was skipped: that is the point


def test_a_thread_still_working_is_waited_for_as_python_does():
    done = run("thread")
    assert done.returncode == 4, done.stderr
    assert "thread done" in done.stderr and "atexit ran" in done.stderr
    assert "teardown ran" in done.stderr  # Python's own exit


def test_an_exit_message_is_printed_by_python_itself():
    done = run("message")
    assert done.returncode == 1
    assert "bad input: say what is wrong" in done.stderr and "teardown ran" in done.stderr


def test_the_program_names_entry_and_python_code_may_still_catch_main():
    import peersync.__main__ as m

    with pytest.raises(SystemExit) as stop:
        sys_argv, sys.argv = sys.argv, ["peersync", "--version"]
        try:
            m.main()
        finally:
            sys.argv = sys_argv
    assert stop.value.code in (0, None)
    text = open(m.__file__).read()
    assert 'if __name__ == "__main__":\n    entry()' in text
    pyproject = __import__("pathlib").Path(m.__file__).parents[1] / "pyproject.toml"
    assert 'peersync = "peersync.__main__:entry"' in pyproject.read_text()
