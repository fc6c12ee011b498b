"""Models with non-trivial weights for export and tool tests, without training."""
import torch

from segkit.modeling import build_model


def perturbed_model(cfg) -> torch.nn.Module:
    """``build_model(cfg)`` in eval mode with seeded noise added to every parameter.

    FCN score layers start at zero, so an untrained model predicts one class; relative
    noise (20% of each tensor's spread) keeps activations at their initial scale.
    """
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            std = float(p.std()) if p.numel() > 1 else 0.0
            p.add_(torch.randn_like(p) * (0.2 * std if std > 0 else 0.05))
    return model


def perturbed_checkpoint(cfg, path) -> str:
    """Save :func:`perturbed_model` in the engine's checkpoint format; returns the path."""
    torch.save({"model": perturbed_model(cfg).state_dict(), "iteration": 1}, path)
    return str(path)
