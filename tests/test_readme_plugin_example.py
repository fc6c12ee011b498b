"""The README's "Writing a plugin" example runs exactly as written and passes segkit.testing."""
import os
import re

import pytest

from segkit import load_components
from segkit.registry import all_registries
from segkit.testing import check_config, check_head, small_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_block(first_line):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if b.startswith(first_line)]
    assert len(blocks) == 1, f"README has {len(blocks)} python blocks starting with {first_line!r}"
    return blocks[0]


@pytest.fixture
def readme_plugin():
    load_components()
    saved = {n: (dict(r._obj_map), dict(r._provenance)) for n, r in all_registries().items()}
    namespace = {"__name__": "my_seg_plugin"}
    exec(compile(_readme_block("# my_seg_plugin/__init__.py"), "README.md", "exec"), namespace)
    yield namespace
    for n, r in all_registries().items():
        r._obj_map.clear(), r._obj_map.update(saved[n][0])
        r._provenance.clear(), r._provenance.update(saved[n][1])


def test_readme_plugin_head_builds_from_its_yaml_keys_and_conforms(readme_plugin):
    assert check_config("add_my_head_config") == ["MODEL.MY_HEAD", "MODEL.MY_HEAD.CHANNELS"]
    cfg = small_cfg()  # get_cfg() now has MODEL.MY_HEAD, as after `pip install -e my-seg-plugin`
    cfg.merge_from_dict({"MODEL": {"HEAD": {"NAME": "MyHead", "IN_FEATURES": ["res5"]}, "MY_HEAD": {"CHANNELS": 32}}})
    head = check_head("MyHead", cfg)
    assert isinstance(head, readme_plugin["MyHead"]) and head.net[0].out_channels == 32
