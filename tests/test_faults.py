"""Environment faults, injected on real files and processes: each ends in one line or is handled.

``launch.py`` runs in subprocesses on ``:tiny`` configs; the faults are the environment's
(a full disk at the file openers, a read-only workdir, SIGINT, damaged files on disk), never
patches of the code under test.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INJECT = REPO / 'tests' / 'helpers' / 'inject_faults.py'
TINY_PRETRAIN = '--config=configs/barlow_tem.py:tiny'


def launch(*args, env=None, timeout=240, script=REPO / 'launch.py'):
    """Runs launch.py (or the fault injector around it) and returns the finished process."""
    full_env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', **(env or {}))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(result) -> str:
    """The run failed with exactly one line on stderr, starting 'error: '; returns it."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout[-2000:]
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    'args, expected',
    [
        (['--config.optim.lrr=0.1'], 'error: unknown config key optim.lrr (did you mean optim.lr?)'),
        (['--config.optimm.lr=0.1'], 'error: unknown config key optimm (did you mean optim?)'),
        (['--config=configs/barlow_tem.py:demoo'], "unknown preset 'demoo'"),
        (['--config=configs/no_such_file.py'], 'config file configs/no_such_file.py: No such file'),
        (['--config.train.num_steps=-1'], 'train.num_steps=-1: expected a positive integer'),
    ],
    ids=['misspelled-key', 'misspelled-section', 'unknown-preset', 'missing-config-file', 'bad-value'],
)
def test_config_errors_are_one_line_and_create_no_workdir(tmp_path, args, expected):
    workdir = tmp_path / 'w'
    result = launch(TINY_PRETRAIN, f'--workdir={workdir}', *args)
    assert result.returncode == 1
    assert expected in one_error_line(result)
    assert not workdir.exists()


def unwritable_folder(tmp_path: Path, kind: str) -> Path:
    """A workdir that cannot be written: under a read-only folder, or under a regular file."""
    if kind == 'under-a-file':
        (tmp_path / 'file').write_text('not a folder')
        return tmp_path / 'file' / 'w'
    folder = tmp_path / 'readonly'
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / 'probe').touch()
    except OSError:
        return folder / 'w'
    pytest.skip('chmod does not stop this user from writing (root)')


@pytest.mark.parametrize('kind', ['read-only', 'under-a-file'])
def test_unwritable_workdir_is_one_line(tmp_path, kind):
    workdir = unwritable_folder(tmp_path, kind)
    try:
        line = one_error_line(launch(TINY_PRETRAIN, f'--workdir={workdir}'))
    finally:
        (tmp_path / 'readonly').exists() and (tmp_path / 'readonly').chmod(0o755)
    assert line.startswith(f'error: workdir {workdir} is not writable')


def test_full_disk_during_a_checkpoint_names_the_step_and_where_a_rerun_resumes(tmp_path):
    # Steps 2, 4, 6 are saved; the disk is "full" for everything under checkpoints/4.
    result = launch(
        TINY_PRETRAIN, f'--workdir={tmp_path}', env={'FAULT_ENOSPC': '/checkpoints/4'}, script=INJECT
    )
    assert one_error_line(result) == (
        f'error: no space left on device writing {tmp_path}/checkpoints/4; free space and rerun to resume from step 2'
    )
    assert result.returncode == 1
    assert 'No space left on device' in (tmp_path / 'log.txt').read_text()  # the traceback
    rerun = launch(TINY_PRETRAIN, f'--workdir={tmp_path}')
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert 'resumed_from: 2' in rerun.stdout


def test_ctrl_c_says_where_the_run_stopped_and_a_rerun_resumes(tmp_path):
    args = [sys.executable, str(REPO / 'launch.py'), TINY_PRETRAIN, f'--workdir={tmp_path}']
    args += ['--config.train.num_steps=100000']
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 180
    try:
        while not (tmp_path / 'checkpoints' / '4').is_dir():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline, 'no checkpoint within 180 s'
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith('error: interrupted at step ')
    assert f'in {tmp_path}; rerunning the same command resumes from step ' in lines[0]


def test_rerun_of_a_finished_pretraining_reports_its_recorded_loss(tmp_path):
    first = launch(TINY_PRETRAIN, f'--workdir={tmp_path}')
    assert first.returncode == 0, first.stderr[-2000:]
    again = launch(TINY_PRETRAIN, f'--workdir={tmp_path}')
    assert again.returncode == 0, again.stderr[-2000:]
    loss = [line for line in first.stdout.splitlines() if 'final_loss' in line]
    assert loss and loss == [line for line in again.stdout.splitlines() if 'final_loss' in line]
    assert 'nan' not in loss[0]
    assert 'already_finished: True' in again.stdout
