"""The Makefile as a new user meets it: what `make serve` installs, and `make serve` with a python3 too old."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_with_a_python_older_than_3_11_says_so_before_installing(tmp_path: Path) -> None:
    """Ubuntu 22.04's python3 is 3.10: `make serve` made the venv and installed torch, then failed in pip's resolver
    ("requires a different Python"). It now stops at once, naming the version found and how to pick another."""
    old_python = tmp_path / "python3.10"
    old_python.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "Python 3.10.12"; exit 0; }\nexit 1\n')
    old_python.chmod(0o755)
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-C", str(ROOT), "serve", f"PY={old_python}", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert (f"make: {old_python} is Python 3.10.12; stepaudio-rt needs Python 3.11 or newer: "
            "make serve PY=python3.11") in proc.stderr, proc.stderr
    assert not venv.exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_with_a_python_that_is_not_installed_says_not_found(tmp_path: Path) -> None:
    """`make serve PY=python3.12` where there is none said "python3.12 is /bin/sh: 1: python3.12: not found;
    stepaudio-rt needs Python 3.11 or newer ... (or python3.12, ...)": too old, and try the one just tried."""
    missing = tmp_path / "python3.12"
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-C", str(ROOT), "serve", f"PY={missing}", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"make: {missing} not found (PY names the Python that builds {venv}); install it" in proc.stderr, proc.stderr
    assert "needs Python 3.11 or newer" not in proc.stderr, proc.stderr
    assert not venv.exists()


def _make_serve_refuses(tmp_path: Path, *make_args: str) -> str:
    """`make serve ...` on a fresh machine: its stderr, once it has stopped without making the venv. PY is a stub
    that fails, so a check that did not stop make in time fails here at the Python check instead of installing."""
    stub = tmp_path / "python3"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-C", str(ROOT), "serve", *make_args, f"PY={stub}", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and not venv.exists(), proc.stderr
    return proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_with_a_mistyped_profile_says_so_before_installing(tmp_path: Path) -> None:
    """`make serve PROFILE=embeded` is not the embedded profile, so the first one installed torch and the test tools
    (3.7 GB to download, minutes), for serve then to refuse the name. It now stops first, with serve's choices."""
    from controller.cli import PROFILES

    stderr = _make_serve_refuses(tmp_path, "PROFILE=embeded")
    assert f"make: PROFILE=embeded is not a profile; choose from {' '.join(PROFILES)}" in stderr, stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("profile", ["step-audio", "full-random"])
def test_make_serve_of_a_step_audio_profile_without_its_folder_says_so_before_installing(tmp_path: Path,
                                                                                          profile: str) -> None:
    """These profiles cannot start without a model folder: their first `make serve` installed torch (minutes), for
    serve then to say it "needs --model-path DIR", an option make does not take (its variable is MODEL_PATH)."""
    stderr = _make_serve_refuses(tmp_path, f"PROFILE={profile}")
    assert (f"make: PROFILE={profile} needs MODEL_PATH=DIR, the Step-Audio model folder: make serve PROFILE={profile} "
            "MODEL_PATH=DIR") in stderr, stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_of_a_model_folder_that_is_not_there_says_so_before_installing(tmp_path: Path) -> None:
    """`make serve PROFILE=tiny MODEL_PATH=/data/sa-tyni` (a typo) installed torch (3.7 GB, minutes) for serve then
    to say the folder does not exist, though the README says MODEL_PATH is checked before anything installs."""
    stderr = _make_serve_refuses(tmp_path, "PROFILE=tiny", f"MODEL_PATH={tmp_path / 'sa-tyni'}")
    assert f"make: MODEL_PATH={tmp_path / 'sa-tyni'} is not a folder: the Step-Audio model folder" in stderr, stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_of_a_model_folder_without_a_profile_says_to_name_one_before_installing(tmp_path: Path) -> None:
    """`make serve MODEL_PATH=DIR`, the profile forgotten, installed the embedded profile, then serve refused the
    folder telling to "add --profile step-audio", an option make does not take. Make now says it in its own terms."""
    stderr = _make_serve_refuses(tmp_path, f"MODEL_PATH={tmp_path}")
    assert ("make: MODEL_PATH is a Step-Audio model folder, which PROFILE=embedded does not use: make serve "
            "PROFILE=step-audio MODEL_PATH=DIR (or PROFILE=tiny, full-random)") in stderr, stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("port", ["abc", "70000", "-1", ""])
def test_make_serve_with_a_port_serve_cannot_take_says_so_before_installing(tmp_path: Path, port: str) -> None:
    """`make serve PORT=abc` installed everything (minutes) for serve then to refuse the port with its usage."""
    stderr = _make_serve_refuses(tmp_path, f"PORT={port}")
    assert f"make: PORT={port} is not a port: a whole number from 0 to 65535, e.g. make serve PORT=8800" in stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_j_serve_with_a_bad_port_makes_no_venv(tmp_path: Path) -> None:
    """Under `make -j4` serve's checks and the venv's recipe ran side by side: `make -j4 serve PORT=abc` refused the
    port while the venv was being made, one run in two here. The checks now come first. PY is a stub that succeeds
    and writes down each call, so a recipe that started shows; tried a few times, as the old race was lost only
    some of the time."""
    calls = tmp_path / "calls"
    stub = tmp_path / "python3"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    for _ in range(6):
        proc = subprocess.run(["make", "-j4", "-C", str(ROOT), "serve", "PORT=abc", f"PY={stub}",
                               f"VENV={tmp_path / 'venv'}"], capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "make: PORT=abc is not a port" in proc.stderr, proc.stderr
        assert not calls.exists(), calls.read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("host", ["http://0.0.0.0", "localhost:8800", "my host", "my'host", ""])
def test_make_serve_with_a_host_that_is_not_an_address_says_so_before_installing(tmp_path: Path, host: str) -> None:
    """A URL or HOST:PORT (as a browser shows the server) was taken to serve's --host after the install, and a
    space in it cut the command line in two."""
    stderr = _make_serve_refuses(tmp_path, f"HOST={host}")
    assert (f"make: HOST={host} is not an address to listen on: an IP address or host name such as 127.0.0.1 or "
            "0.0.0.0 (the port goes in PORT)") in stderr, stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("make_args", [("PORT=0",), ("PORT=8800", "HOST=0.0.0.0"), ("HOST=::1",), ("HOST=fe80::1",)])
def test_make_serve_takes_every_port_and_address_serve_takes(tmp_path: Path, make_args: tuple[str, ...]) -> None:
    host = next((arg[5:] for arg in make_args if arg.startswith("HOST=")), "127.0.0.1")
    port = next((arg[5:] for arg in make_args if arg.startswith("PORT=")), "8765")
    assert f"--host {host} --port {port} " in _serve_line(tmp_path, *make_args)


def _pip_installs(tmp_path: Path, *make_args: str) -> list[str]:
    """The pip install lines a fresh `make ...` would run (make -n: nothing runs)."""
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), *make_args, f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, timeout=120, check=True)
    return [line for line in proc.stdout.splitlines() if "/bin/pip install" in line]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_installs_no_torch_for_the_embedded_profile(tmp_path: Path) -> None:
    """The first `make serve` installed torch (on Linux PyPI's CUDA build, 4.7 GB with its nvidia-* packages) and the
    test tools, though the embedded profile it serves runs neither: it now installs only the serving extras."""
    installs = _pip_installs(tmp_path, "serve")
    assert any(line.endswith("-c constraints.txt -e '.[embedded,mqtt,remote]'") for line in installs), installs
    assert not any("torch" in line or "test]" in line for line in installs), installs


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("make_args", [("test",), ("serve", "PROFILE=tiny"),
                                       ("serve", "PROFILE=step-audio", "MODEL_PATH=/data/sa")])
def test_make_test_and_the_engine_profiles_install_torch_and_everything(tmp_path: Path,
                                                                        make_args: tuple[str, ...]) -> None:
    installs = _pip_installs(tmp_path, *make_args)
    assert any(line.endswith("-c constraints.txt 'torch==2.13.0'") for line in installs), installs
    assert any(line.endswith("-e '.[embedded,engine,kernels,mqtt,remote,test]'") for line in installs), installs


def _serve_line(tmp_path: Path, *make_args: str) -> str:
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), "serve", *make_args, f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, timeout=120, check=True)
    return next(line for line in proc.stdout.splitlines() if "stepaudio-rt serve" in line)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_passes_a_model_path_to_the_step_audio_profiles(tmp_path: Path) -> None:
    """`make serve PROFILE=step-audio`, which the README offers, could only fail ("needs --model-path DIR"): make had
    no way to pass the model folder. MODEL_PATH now reaches serve's --model-path, a folder with a space included."""
    line = _serve_line(tmp_path, "PROFILE=step-audio", "MODEL_PATH=/data/Step Audio")
    assert line.endswith("--profile step-audio --model-path '/data/Step Audio'"), line
    assert "--model-path" not in _serve_line(tmp_path), "the embedded profile takes no model folder"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_model_path_with_a_quote_in_it_reaches_serve_whole(tmp_path: Path) -> None:
    """MODEL_PATH="/data/Bob's models" stopped `make serve` in a shell syntax error ("Unterminated quoted string")."""
    path = str(tmp_path / "Bob's Step-Audio")
    Path(path).mkdir()
    checks = subprocess.run(["make", "-s", "-C", str(ROOT), "serve-options", "PROFILE=step-audio",
                             f"MODEL_PATH={path}"], capture_output=True, text=True, timeout=120)
    assert checks.returncode == 0 and checks.stderr == "", checks.stderr
    line = _serve_line(tmp_path, "PROFILE=step-audio", f"MODEL_PATH={path}")
    assert shlex.split(line)[-4:] == ["--profile", "step-audio", "--model-path", path], line


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_alone_lists_what_to_run_and_installs_nothing(tmp_path: Path) -> None:
    """`make` ran the Makefile's first rule: it made a bare venv (pip only) and said nothing of what to run next."""
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), f"VENV={venv}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[:2] for line in proc.stdout.splitlines()] == [
        ["make", "serve"], ["make", "test"], ["make", "venv"], ["make", "clean"]], proc.stdout
    assert not venv.exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_with_another_python_than_the_venvs_says_so_instead_of_testing_the_old_one(tmp_path: Path) -> None:
    """`make test PY=python3.12` beside a .venv made with 3.11 ran the tests on 3.11 without a word. It now stops,
    naming both Pythons and how to rebuild; without PY, or with the venv's own, the tests run as before."""
    calls, venv = tmp_path / "calls", tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for python, version in ((venv / "bin" / "python", "3.11.9"), (tmp_path / "python3.12", "3.12.3")):
        python.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                          f'[ "$1" = --version ] && echo "Python {version}" || echo "{version} (main)"\n')
        python.chmod(0o755)
    (venv / ".installed").touch()  # installed: make goes straight to the tests

    def make_test(*make_args: str) -> subprocess.CompletedProcess[str]:
        calls.unlink(missing_ok=True)
        return subprocess.run(["make", "-C", str(ROOT), "test", f"VENV={venv}", *make_args],
                              capture_output=True, text=True, timeout=120)

    proc = make_test(f"PY={tmp_path / 'python3.12'}")
    assert proc.returncode != 0
    assert (f"make: {venv} runs Python 3.11.9, not PY={tmp_path / 'python3.12'} (Python 3.12.3): make clean, then "
            f"make test PY={tmp_path / 'python3.12'}") in proc.stderr, proc.stderr
    assert "-m pytest -q tests" not in calls.read_text()
    for make_args in ((), (f"PY={venv / 'bin' / 'python'}",)):
        proc = make_test(*make_args)
        assert proc.returncode == 0, proc.stderr
        assert calls.read_text().splitlines()[-1] == "-m pytest -q tests"
