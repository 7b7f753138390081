"""reexport: a bundle's graph written again from its own weights, manifest and dense graph untouched."""
import filecmp
import os
import tempfile
import unittest

import onnx
import torch
from onnx import numpy_helper

from models.toolchain.export import export_bundle, manifest
from models.toolchain.make_tiny_bundle import build
from models.toolchain.reexport import reexport


def weights(path: str) -> dict:
    graph = onnx.load(path).graph
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}


def metadata(path: str) -> dict:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


class ReexportTest(unittest.TestCase):
    def test_same_weights_manifest_and_dense_graph(self):
        cfg, vit, model = build(seed=3)
        # Trained weights are all distinct; untouched zero biases would be merged into one initializer.
        with torch.no_grad():
            for p in [*vit.parameters(), *model.parameters()]:
                p.add_(torch.randn_like(p) * 0.01)
        labels = [f"class-{i}" for i in range(cfg.num_classes)]
        meta = manifest(model, "tiny-vit-acm", labels, mean=[0.5], std=[0.25], dense_graph="dense.onnx",
                        training={"note": "random weights, for tests"})
        with tempfile.TemporaryDirectory() as tmp:
            src, out = os.path.join(tmp, "src"), os.path.join(tmp, "out")
            export_bundle(model, src, meta, dense=vit)
            # A hand edit the exporter would not reproduce byte for byte: the manifest file must be kept as is.
            with open(os.path.join(src, "acm.json"), "a") as f:
                f.write("\n")
            before, after = reexport(src, out)
            self.assertEqual(before, len(onnx.load(os.path.join(src, "model.onnx")).graph.node))
            self.assertEqual(after, len(onnx.load(os.path.join(out, "model.onnx")).graph.node))
            self.assertTrue(filecmp.cmp(os.path.join(src, "acm.json"), os.path.join(out, "acm.json"), shallow=False))
            self.assertTrue(filecmp.cmp(os.path.join(src, "dense.onnx"), os.path.join(out, "dense.onnx"), shallow=False))
            self.assertEqual(metadata(os.path.join(src, "model.onnx")), metadata(os.path.join(out, "model.onnx")))
            old, new = weights(os.path.join(src, "model.onnx")), weights(os.path.join(out, "model.onnx"))
            learned = [name for name, value in old.items() if value.size > 1]
            self.assertGreater(len(learned), 20)
            for name in learned:
                self.assertIn(name, new)
                self.assertTrue((old[name] == new[name]).all(), name)
            # The source bundle is left as it was.
            self.assertEqual(before, len(onnx.load(os.path.join(src, "model.onnx")).graph.node))


if __name__ == "__main__":
    unittest.main()
