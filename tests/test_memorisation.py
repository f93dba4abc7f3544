"""The memorisation check finds a training image planted among the samples: the nearest training image
of that sample is the planted copy (CLIP distance ~0, float16 embeddings), found by streaming the embed
stage's clip_embedding column batch by batch over several shards."""
import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import shards as sh


def tiny_clean_clip(directory):
    """A clean CLIP checkpoint (what `glide train clip --clip-mode clean` exports), random weights
    drawn wide (std 0.5) so that different images get clearly different embeddings."""
    import torch

    from training.checkpoint import save_checkpoint
    from training.factory import create_model
    from training.model_config import load_model_config

    cfg = load_model_config("tiny-clip")
    torch.manual_seed(0)
    model = create_model(cfg, device="cpu")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return save_checkpoint(directory, model, cfg, step=1, extra={"train": {"clip_mode": "clean"}})


def scene(i: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(i)
    image = np.zeros((size, size, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
    x, y = rng.integers(0, size - 12, 2)
    image[y:y + 12, x:x + 12] = rng.integers(0, 255, 3, dtype=np.uint8)
    return image


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


def write_embedded_dataset(root, clip, images, *, shard_rows=40, batch_rows=16):
    """An embed-stage-like dataset: pairs columns used here plus clip_embedding, in several shards of
    several record batches, and a manifest naming the CLIP."""
    from evaluation.memorisation import embed_samples

    emb = embed_samples(clip, images).astype(np.float16)
    shards_meta = []
    for number, start in enumerate(range(0, len(images), shard_rows)):
        rows = range(start, min(start + shard_rows, len(images)))
        table = pa.table({
            "uid": [f"{i:032x}" for i in rows], "caption": [f"training image {i}" for i in rows],
            "image": [png(images[i]) for i in rows],
            "clip_embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb[list(rows)].ravel()), emb.shape[1]),
        })
        name = sh.shard_name(number)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as w:
            for b in table.to_batches(max_chunksize=batch_rows):
                w.write_batch(b)
        data = sink.getvalue().to_pybytes()
        sh.write_bytes_atomic(f"{root}/shards/{name}", data)
        shards_meta.append({"name": name, "rows": table.num_rows, "bytes": len(data), "sha256": sh.bytes_sha256(data)})
    sh.write_manifest(str(root), stage="embed", config={"clip_model": clip.describe()}, shards=shards_meta,
                      counts={"input": len(images), "kept": len(images), "rejected": {}})
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from filtering.clip_features import load_clip_features

    return load_clip_features(str(tiny_clean_clip(tmp_path_factory.mktemp("clip") / "clip")), "cpu")


def test_a_planted_training_image_is_the_nearest_of_its_sample(tmp_path, clip):
    from evaluation.memorisation import (embed_samples, nearest_training_images, training_clip, training_images)

    training = np.stack([scene(i) for i in range(150)])
    samples = np.stack([scene(1000 + i) for i in range(6)])
    samples[4] = training[97]                     # a sample that regurgitates training image 97
    dataset = write_embedded_dataset(tmp_path / "emb", clip, training)
    assert training_clip(str(dataset)) == clip.describe()["exact_spec"]
    found = nearest_training_images(embed_samples(clip, samples), str(dataset))
    assert found.searched == 150 and len(sh.list_shards(str(dataset))) == 4
    assert found.uid[4] == f"{97:032x}" and found.caption[4] == "training image 97"
    assert abs(found.distance[4]) < 1e-5                             # float16 storage, else exact
    assert np.all(np.delete(found.distance, 4) > 1e-4)
    # the brute-force answer over the whole set agrees for every sample
    train = embed_samples(clip, training).astype(np.float16).astype(np.float32)
    brute = (embed_samples(clip, samples) @ train.T).argmax(axis=1)
    assert found.uid == [f"{i:032x}" for i in brute]
    stored = training_images(found, [4])[4]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored)).convert("RGB")), training[97])


def test_a_dataset_without_embeddings_is_bad_input(tmp_path, clip):
    from evaluation.memorisation import nearest_training_images, training_clip

    dataset = write_embedded_dataset(tmp_path / "emb", clip, np.stack([scene(i) for i in range(4)]))
    with pytest.raises(sh.UserError, match="clip_embedding"):
        nearest_training_images(np.zeros((2, clip.dim + 1), np.float32), str(dataset))
    (tmp_path / "plain").mkdir()
    sh.write_manifest(str(tmp_path / "plain"), stage="ingest", config={}, shards=[],
                      counts={"input": 0, "kept": 0, "rejected": {}})
    with pytest.raises(sh.UserError, match="names no CLIP"):
        training_clip(str(tmp_path / "plain"))
