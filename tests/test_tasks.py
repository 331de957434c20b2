"""The task registry: every registered task runs its ``:tiny`` preset through ``tasks.run``."""

import importlib

import pytest

from fewshot_jax import tasks

# Registered task → the config file whose ':tiny' preset smoke-tests it.
TINY_CONFIGS = {
    'pretrain': 'barlow_tem',
    'probe': 'probe_nanowire',
    'segment': 'unet_nanowire',
    'select': 'select',
    'workflow': 'workflow',
}
# The workflow's ':tiny' preset runs every other task; tests/test_workflow.py runs it through
# tasks.run (with the skip, force and resume checks), so it is not run a second time here.
RUN_HERE = sorted(set(TINY_CONFIGS) - {'workflow'})


def test_every_registered_task_has_a_tiny_config():
    assert set(TINY_CONFIGS) == set(tasks.names())


@pytest.mark.parametrize('name', RUN_HERE)
def test_task_runs_its_tiny_preset(name, tmp_path):
    config = importlib.import_module(f'configs.{TINY_CONFIGS[name]}').get_config('tiny')
    assert config.task == name
    summary = tasks.run(name, config, tmp_path)
    assert isinstance(summary, dict) and summary
    assert (tmp_path / 'log.txt').is_file()


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(tasks.UnknownTaskError, match="'pretrain'"):
        tasks.run('pretrian', None, '/nonexistent')
