"""README's two set-up commands stay true: CI runs the test command verbatim."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up: the two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    cmds = _commands()
    assert len(cmds) == 2, cmds
    main, tests = cmds
    assert "tools/train_net.py" in main and "configs/fashion_scenes/main.yaml" in main
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci.splitlines()


def test_readme_main_job_config_exists():
    main = _commands()[0]
    config = re.search(r"--config-file (\S+)", main).group(1)
    assert (ROOT / config).is_file(), f"README's main job names {config}, which does not exist"
