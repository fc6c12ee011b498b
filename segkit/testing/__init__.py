"""Conformance kit for segkit components, for plugin authors' own test suites.

Like scikit-learn's ``check_estimator``: each check builds a component from a
config exactly the way segkit will (:func:`segkit.config.build_component`), runs
it on small inputs and checks its registry's contract. A failure raises
:class:`ConformanceError` saying what to change.

Example (in a plugin's ``tests/``)::

    from segkit.registry import HEAD_REGISTRY
    from segkit.testing import check_component, check_head

    def test_my_head_conforms():
        cfg = my_small_config()          # get_cfg() plus the keys your head reads
        check_head("MyHead", cfg)        # or check_component(HEAD_REGISTRY, "MyHead", cfg)

``name_or_class`` may be a registered name or the (not yet registered) class or
function itself. Checks that need a config start from :func:`small_cfg`, a tiny
configuration of segkit's defaults; pass your own to test your keys.

The ``segkit_check`` pytest fixture (``pytest11`` entry point ``segkit``) gives
:func:`check_component`.
"""
from segkit.testing.checks import (
    CHECKS,
    ConformanceError,
    check_backbone,
    check_component,
    check_config,
    check_dataset,
    check_evaluator,
    check_head,
    check_hook,
    check_loss,
    check_lr_scheduler,
    check_meta_arch,
    check_optimizer,
    check_postprocessor,
    check_transform,
)
from segkit.testing.configs import builtin_cases, small_cfg

__all__ = [
    "CHECKS",
    "ConformanceError",
    "builtin_cases",
    "check_backbone",
    "check_component",
    "check_config",
    "check_dataset",
    "check_evaluator",
    "check_head",
    "check_hook",
    "check_loss",
    "check_lr_scheduler",
    "check_meta_arch",
    "check_optimizer",
    "check_postprocessor",
    "check_transform",
    "small_cfg",
]
