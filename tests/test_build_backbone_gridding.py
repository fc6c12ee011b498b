"""build_backbone checks dilated stacks for gridding (HDC, Wang et al. 2018) per MODEL.HDC.GRIDDING_CHECK."""
import warnings

import pytest

from segkit.config import get_cfg
from segkit.modeling.backbone import build_backbone
from segkit.modeling.gridding import GriddingWarning


def _cfg(res5, check="warn"):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.WIDTH", "8",
                         "MODEL.RESNETS.OUTPUT_STRIDE", "16", "MODEL.RESNETS.RES5_DILATIONS", str(res5),
                         "MODEL.HDC.GRIDDING_CHECK", check])
    return cfg


def test_constant_rates_warn():
    with pytest.warns(GriddingWarning):
        build_backbone(_cfg([2, 2, 2]))


def test_hdc_rates_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", GriddingWarning)
        build_backbone(_cfg([1, 2, 3]))


def test_raise_mode_refuses_and_off_mode_is_silent():
    with pytest.raises(Exception, match="(?i)grid"):
        build_backbone(_cfg([2, 2, 2], "raise"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GriddingWarning)
        build_backbone(_cfg([2, 2, 2], "off"))
