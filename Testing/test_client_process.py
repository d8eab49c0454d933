"""malenia.client as Slicer's Python uses it: importable without torch or numpy, the engine
process refuses to expose itself by accident, and a manager that dies takes its engine with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from malenia.inference import default_weights_path
from malenia.synth import make_sample

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "MaleniaSegment"


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        **kwargs,
    )


def test_client_imports_without_torch_numpy_or_the_engine():
    done = run_python(
        """
        import sys
        import malenia.client
        heavy = {"torch", "numpy", "malenia.inference", "malenia.model", "SimpleITK"}
        print(sorted(heavy & set(sys.modules)))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_serve_refuses_a_public_interface_without_the_flag(tmp_path):
    token_file = tmp_path / "server.json"
    done = subprocess.run(
        [sys.executable, "-m", "malenia.server", "--host", "0.0.0.0", "--token-file", token_file],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)},
        timeout=60,
    )
    assert done.returncode == 1
    assert "Refusing to listen on 0.0.0.0" in done.stderr and "--allow-remote" in done.stderr
    assert not token_file.exists()


MANAGER = """
    import json, sys, time
    sys.modules["numpy"] = None  # as in a Python without numpy: the client must not need it
    sys.modules["torch"] = None
    from malenia.client import EngineProcess
    shape, data = json.loads(sys.argv[1]), open(sys.argv[2], "rb").read()
    process = EngineProcess(device="cpu")
    process.start()
    client = process.client()
    volume_id = client.upload_raw(data, shape, "<i2", spacing=(2, 2, 2), origin=(0, 0, 0))
    client.wait(volume_id)
    result = client.segment(volume_id, "renal cyst")
    print(json.dumps({
        "server_pid": process.pid,
        "labelmap": repr(result.labelmap),
        "mask_bytes": len(result.mask_bytes),
        "foreground": sum(1 for i in range(0, len(result.mask_bytes), 2)
                          if result.mask_bytes[i:i + 2] != b"\\0\\0"),
        "shape": list(result.shape),
    }), flush=True)
    time.sleep(600)  # killed by the test
"""


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(not default_weights_path().is_file(), reason="bundled weights are absent")
def test_numpy_free_manager_dies_and_its_engine_exits_too(tmp_path):
    """A client without numpy gets the raw mask; when the manager is killed (no atexit, as
    in a Slicer crash) the engine notices and exits by itself."""
    # A renal cyst rendered in a small abdomen: what the bundled model is asked for.
    ct = make_sample(1, ("renal cyst",), (48, 48, 48), (2.0, 2.0, 2.0), max_lesions=1).ct
    ct = ct.astype("<i2")
    (tmp_path / "ct.raw").write_bytes(ct.tobytes())
    manager = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(MANAGER),
            json.dumps(list(ct.shape)),
            str(tmp_path / "ct.raw"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)},
    )
    server_pid = None
    try:
        line = manager.stdout.readline()
        assert line, manager.stderr.read()
        report = json.loads(line)
        server_pid = report["server_pid"]
        assert report["labelmap"] == "None"  # no numpy: no array, but all the bytes
        assert report["shape"] == [48, 48, 48] and report["mask_bytes"] == 48**3 * 2
        assert report["foreground"] > 0
        server = psutil.Process(server_pid)
        assert "malenia.server" in " ".join(server.cmdline())
        os.kill(manager.pid, signal.SIGKILL)
        manager.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and running(server_pid):
            time.sleep(0.2)
        assert not running(server_pid), "the orphaned engine kept running"
    finally:
        if manager.poll() is None:
            manager.kill()
            manager.wait(timeout=10)
        if server_pid and psutil.pid_exists(server_pid):
            try:
                leftover = psutil.Process(server_pid)
                if "malenia.server" in " ".join(leftover.cmdline()):
                    leftover.kill()
            except psutil.NoSuchProcess:
                pass


def test_process_alive_follows_a_process_that_is_not_our_parent():
    """The engine watches Slicer's pid, which behind PythonSlicer is its grandparent."""
    from malenia.server.cli import process_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert not process_alive(child.pid)


def test_background_children_get_no_console_window_on_windows():
    """PythonSlicer.exe is a console program: without CREATE_NO_WINDOW Windows opens a console
    for the engine, and closing it kills the engine (what slicer.util.launchConsoleProcess
    avoids by hiding the window)."""
    from malenia.client import CREATE_NO_WINDOW, child_process_options

    engine = child_process_options("nt")["creationflags"]
    assert CREATE_NO_WINDOW == 0x08000000  # the value WinBase.h gives CREATE_NO_WINDOW
    assert engine & CREATE_NO_WINDOW and engine & 0x00000200  # + CREATE_NEW_PROCESS_GROUP
    assert child_process_options("nt", new_group=False) == {"creationflags": CREATE_NO_WINDOW}
    assert child_process_options("posix") == {"start_new_session": True}
    assert child_process_options("posix", new_group=False) == {}


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_cancel_stops_an_engine_that_is_still_starting(tmp_path):
    """Start-up may take minutes (torch import on a cold disk); Cancel must not wait for it."""
    import threading

    from malenia.client import EngineProcess
    from malenia.errors import CancelledError

    pid_file = tmp_path / "pid"
    never_ready = executable(
        tmp_path / "python", f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n"
    )
    process = EngineProcess(python=str(never_ready), startup_timeout=120)

    class Flag:
        cancelled = False

    flag = Flag()
    threading.Timer(1.0, lambda: setattr(flag, "cancelled", True)).start()
    started = time.monotonic()
    try:
        with pytest.raises(CancelledError, match="starting"):
            process.start(cancel=flag)
        assert time.monotonic() - started < 10
        assert process.popen is None
        assert not running(int(pid_file.read_text(encoding="utf-8")))
    finally:
        process.close()


# Like CTKAppLauncher, which PythonSlicer is: start the real interpreter as a *child*
# (QProcess::start in ctkAppLauncher.cpp) and wait for it.
LAUNCHER = """#!{python}
import subprocess, sys
sys.exit(subprocess.call([{python!r}, *sys.argv[1:]]))
"""

LAUNCHED_MANAGER = """
    import json, sys, time
    from malenia.client import EngineProcess
    process = EngineProcess(device="cpu", python=sys.argv[1], startup_timeout=240)
    process.start()
    health = process.client().health()
    print(json.dumps({"launcher": process.pid, "server": process.server_pid,
                      "health": health}), flush=True)
    time.sleep(600)  # killed by the test
"""


@pytest.mark.slow  # one engine start-up (torch import + weights): ~20-40 s on 2 busy cores
@pytest.mark.timeout(400)
@pytest.mark.skipif(not default_weights_path().is_file(), reason="bundled weights are absent")
def test_engine_started_through_a_launcher_starts_answers_and_exits_with_its_watched_parent(
    tmp_path,
):
    """Inside Slicer the engine's interpreter is PythonSlicer, a launcher whose child is the
    real Python: the manager must recognise the server's token file (not by the launcher's
    pid), and the server must watch Slicer (its grandparent), not the launcher."""
    launcher = executable(tmp_path / "PythonSlicer", LAUNCHER.format(python=sys.executable))
    manager = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(LAUNCHED_MANAGER), str(launcher)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)},
    )
    report = None
    try:
        line = manager.stdout.readline()
        assert line, manager.stderr.read()
        report = json.loads(line)
        assert report["health"].get("status") == "ok", report
        launcher_pid, server_pid = report["launcher"], report["server"]
        assert server_pid != launcher_pid
        assert psutil.Process(server_pid).ppid() == launcher_pid  # the launcher's child
        assert "malenia.server" in " ".join(psutil.Process(server_pid).cmdline())
        time.sleep(3)  # the old watcher (getppid() == manager) gave up within a second
        assert running(server_pid), "the server stopped while its manager was alive"
        os.kill(manager.pid, signal.SIGKILL)  # Slicer crashes: no atexit, no stop()
        manager.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (running(server_pid) or running(launcher_pid)):
            time.sleep(0.2)
        assert not running(server_pid), "the engine outlived the process it watched"
        assert not running(launcher_pid), "the launcher outlived its engine"
    finally:
        if manager.poll() is None:
            manager.kill()
            manager.wait(timeout=10)
        for pid in (report or {}).get("server"), (report or {}).get("launcher"):
            if pid and running(pid):
                psutil.Process(pid).kill()
