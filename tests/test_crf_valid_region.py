"""With TEST.IMS_PER_BATCH > 1 the CRF runs on each image's valid region: batching never changes a result."""
import numpy as np
import pytest
import torch

from segkit.config import get_cfg
from segkit.data.build import collate_batch
from segkit.evaluation import inference_on_dataset
from segkit.postprocess import build_postprocessor_chain, on_valid_regions

PAD = (123, 117, 104)


def _sample(h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    image[:, : h // 2] = torch.tensor([200, 30, 30], dtype=torch.uint8)[:, None, None]  # a real edge
    return {"image": image, "sem_seg": torch.zeros(h, w, dtype=torch.int64), "record": {"height": h, "width": w}}


def _probs(images, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(images.shape[0], k, *images.shape[2:], generator=gen) + images[:, :k].float() / 60.0
    return torch.softmax(logits, 1)


def _chain():
    cfg = get_cfg()
    cfg.merge_from_list(["POSTPROCESS.CHAIN", '["DenseCRF"]', "POSTPROCESS.CRF.ITERATIONS", "3",
                         "POSTPROCESS.CRF.THETA_ALPHA", "10.0"])
    return build_postprocessor_chain(cfg)


def test_padded_batch_equals_images_alone():
    samples = [_sample(14, 19, 0), _sample(9, 12, 1), _sample(14, 19, 2), _sample(11, 19, 3)]
    batch = collate_batch(samples, pad_value=PAD)
    assert batch["image_sizes"] == [(14, 19), (9, 12), (14, 19), (11, 19)]
    images = batch["image"]
    probs = _probs(images)
    chain = _chain()
    out = on_valid_regions(chain, probs, images, batch["image_sizes"])
    naive = chain(probs, images)  # what the evaluator did before: the CRF sees the padding
    for i, (h, w) in enumerate(batch["image_sizes"]):
        alone = chain(probs[i : i + 1, :, :h, :w].contiguous(), images[i : i + 1, :, :h, :w].contiguous())
        torch.testing.assert_close(out[i : i + 1, :, :h, :w], alone, atol=1e-6, rtol=0)
        # Padded pixels keep the network's probabilities (they are ignored by the metric).
        assert torch.equal(out[i, :, h:], probs[i, :, h:]) and torch.equal(out[i, :, :, w:], probs[i, :, :, w:])
        if (h, w) != images.shape[2:]:
            assert (naive[i, :, :h, :w] - alone[0]).abs().max() > 1e-3  # the padding did change the result
    assert not torch.equal(out, probs)  # the CRF ran


def test_evaluation_batches_of_mixed_sizes_score_like_single_images():
    samples = [_sample(14, 19, 0), _sample(9, 12, 1), _sample(11, 16, 2)]
    chain = _chain()

    class Recorder:
        def reset(self):
            self.outputs = []

        def process(self, batch, outputs):
            for i, (h, w) in enumerate(batch["image_sizes"]):
                self.outputs.append({k: v[i, :, :h, :w] for k, v in outputs.items()})

        def evaluate(self):
            return {}

    # Inference that depends only on each image: pixel-wise, so padding cannot change the raw probs.
    def pixelwise(images):
        return torch.softmax(images[:, :3].float() / 40.0, 1)

    batched, single = Recorder(), Recorder()
    inference_on_dataset([collate_batch(samples, pad_value=PAD)], batched, pixelwise, {"crf": chain})
    inference_on_dataset([collate_batch([s], pad_value=PAD) for s in samples], single, pixelwise, {"crf": chain})
    for a, b in zip(batched.outputs, single.outputs):
        torch.testing.assert_close(a["sem_seg"], b["sem_seg"], atol=1e-6, rtol=0)  # vectorised softmax
        torch.testing.assert_close(a["crf"], b["crf"], atol=1e-6, rtol=0)
        assert np.array_equal(a["crf"].argmax(0).numpy(), b["crf"].argmax(0).numpy())


def _recording(calls):
    """A post-processor that adds 1 and records the shape and contiguity of what it was given."""
    def post(probs, images):
        calls.append((tuple(probs.shape), probs.is_contiguous(), tuple(images.shape), images.is_contiguous()))
        return probs + 1.0
    return post


def test_valid_regions_at_the_edges_of_the_batch_are_accepted_and_cropped():
    probs = torch.arange(4 * 2 * 5 * 6, dtype=torch.float32).reshape(4, 2, 5, 6)
    images = torch.zeros(4, 3, 5, 6, dtype=torch.uint8)
    before = probs.clone()
    calls = []
    sizes = [(5, 6), (5, 3), (2, 6), (1, 1)]  # full; full height; full width; one pixel
    out = on_valid_regions(_recording(calls), probs, images, sizes)
    assert torch.equal(probs, before)  # the input is not modified
    # one call for the full image, then each other image alone on its crop, always contiguous
    assert calls == [((1, 2, 5, 6), True, (1, 3, 5, 6), True), ((1, 2, 5, 3), True, (1, 3, 5, 3), True),
                     ((1, 2, 2, 6), True, (1, 3, 2, 6), True), ((1, 2, 1, 1), True, (1, 3, 1, 1), True)]
    expected = before.clone()
    for i, (h, w) in enumerate(sizes):
        expected[i, :, :h, :w] += 1.0  # refined inside the valid region, the input probabilities outside
    assert torch.equal(out, expected)


def test_valid_regions_without_full_images_or_padding():
    probs = torch.rand(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    calls = []
    out = on_valid_regions(_recording(calls), probs, images, [(3, 4), (4, 2)])
    assert [c[0] for c in calls] == [(1, 2, 3, 4), (1, 2, 4, 2)]  # no call for an empty "full" group
    expected = probs.clone()
    expected[0, :, :3] += 1.0
    expected[1, :, :, :2] += 1.0
    assert torch.equal(out, expected)
    for sizes in (None, [(4, 4), (4, 4)]):  # no padding: the whole batch in one call
        calls = []
        assert torch.equal(on_valid_regions(_recording(calls), probs, images, sizes), probs + 1.0)
        assert [c[0] for c in calls] == [(2, 2, 4, 4)]


@pytest.mark.parametrize("size", [(0, 3), (3, 0), (6, 3), (3, 7), (-1, 3)])
def test_valid_region_outside_the_batch_is_refused(size):
    probs = torch.zeros(2, 2, 5, 6)
    images = torch.zeros(2, 3, 5, 6, dtype=torch.uint8)
    with pytest.raises(ValueError, match=rf"image 1 size \({size[0]}, {size[1]}\) outside the batch's \(5, 6\)"):
        on_valid_regions(lambda p, i: p, probs, images, [(5, 6), size])
    with pytest.raises(ValueError, match="1 sizes for a batch of 2 images"):
        on_valid_regions(lambda p, i: p, probs, images, [(5, 6)])
