"""The convolutional stem: its cost, its checks, that fine-tuning leaves its statistics alone, and
that a bundle reads back into the model it was exported from."""
import json
import unittest

import torch

from models.toolchain.acm import from_dense
from models.toolchain.train_base import augment
from models.toolchain.vit import CONFIGS, ViTConfig, build_vit, dense_macs, embedding_macs

torch.set_num_threads(2)


class StemTest(unittest.TestCase):
    def test_embedding_macs_by_hand(self):
        cfg = CONFIGS["fashion-conv"]  # 1 -> 24 (3x3, 14x14 out), 24 -> 48 (3x3, 7x7 out), 48 -> 96 (1x1)
        self.assertEqual(embedding_macs(cfg), 14 * 14 * 24 * 1 * 9 + 7 * 7 * 48 * 24 * 9 + 7 * 7 * 48 * 96)
        patchify = CONFIGS["fashion-small"]
        self.assertEqual(embedding_macs(patchify), 49 * 16 * 96)
        self.assertEqual(dense_macs(cfg) - dense_macs(patchify), embedding_macs(cfg) - embedding_macs(patchify))

    def test_stem_must_match_the_patch_size(self):
        with self.assertRaisesRegex(ValueError, "patch_size 8"):
            ViTConfig(stem=(24, 48), patch_size=8)

    def test_config_survives_json(self):
        cfg = CONFIGS["fashion-conv"]
        self.assertEqual(ViTConfig(**json.loads(json.dumps(cfg.to_dict()))), cfg)

    def test_stem_tokens_and_acm_copy(self):
        torch.manual_seed(0)
        cfg = CONFIGS["fashion-conv"]
        vit = build_vit(cfg).eval()
        x = torch.randn(3, 1, 28, 28)
        self.assertEqual(tuple(vit._process_input(x).shape), (3, cfg.tokens - 1, cfg.hidden_dim))
        model = from_dense(vit, cfg)
        self.assertTrue(torch.allclose(model.conv_proj(x), vit.conv_proj(x)))

    def test_fine_tuning_keeps_the_stem_statistics(self):
        cfg = CONFIGS["fashion-conv"]
        model = from_dense(build_vit(cfg).eval(), cfg)
        model.train()
        before = model.conv_proj[1].running_mean.clone()
        model(torch.randn(4, 1, 28, 28) * 3 + 1, torch.full((4,), 0.5, dtype=torch.float64))
        self.assertFalse(model.conv_proj.training)
        self.assertTrue(torch.equal(before, model.conv_proj[1].running_mean))
        self.assertTrue(model.layers[0].training)


class ImportBundleTest(unittest.TestCase):
    """An exported bundle read back (import_bundle) computes what the exported model computed."""

    def test_round_trip_through_onnx(self):
        self._round_trip(budget_norms=False)

    def test_round_trip_with_norms_conditioned_on_the_budget(self):
        model, model2 = self._round_trip(budget_norms=True)
        self.assertTrue(torch.equal(model2.norm_knots, model.norm_knots))
        self.assertTrue(torch.equal(model2.ln.budget_shift, model.ln.budget_shift))

    def _round_trip(self, budget_norms: bool):
        """Exports a small model with a stem and imports it back; returns (model, imported model)."""
        import tempfile

        from models.toolchain.export import export_bundle, manifest
        from models.toolchain.import_bundle import import_models
        torch.manual_seed(0)
        cfg = ViTConfig(num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, stem=(4, 8))
        vit = build_vit(cfg)
        with torch.no_grad():
            # Distinct values everywhere, as after training: the exporter merges equal-valued
            # parameters (torchvision's zero biases) into one initializer.
            for p in vit.parameters():
                p.normal_(std=0.3)
            # Batch norms with statistics and scales of their own, to fold.
            for m in vit.conv_proj:
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(); m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
        vit.eval()
        model = from_dense(vit, cfg).eval()
        if budget_norms:
            model.condition_norms()
        with torch.no_grad():
            for _, _, acm in model.acms():
                for p in acm.gate.parameters():
                    p.mul_(4.0)
            model.cap_weights.copy_(torch.linspace(0.2, 1.0, len(model.acms()), dtype=torch.float64))
            for p in model.norm_corrections():
                p.normal_(std=0.3)
        meta = manifest(model, "t", [str(i) for i in range(10)], [0.5], [0.25], dense_graph="dense.onnx",
                        training={"steps": {"base_epochs": 3, "phase3": 7}})
        x = torch.randn(6, 1, 28, 28)
        # 0.33 lies between two budget knots of conditioned norms.
        budget = torch.tensor([1.0, 0.25, 0.6, 0.1, 0.75, 0.33], dtype=torch.float64)
        with tempfile.TemporaryDirectory() as out:
            export_bundle(model, out, meta, dense=vit)
            cfg2, vit2, model2, _ = import_models(out)
        self.assertEqual(cfg2, cfg)
        self.assertFalse(vit.training or model.training, "export left a model in training mode")
        with torch.no_grad():
            self.assertTrue(torch.allclose(vit2(x), vit(x), atol=1e-5))
            (logits, counts), (logits2, counts2) = model(x, budget), model2(x, budget)
        self.assertTrue(torch.allclose(logits2, logits, atol=1e-5))
        self.assertTrue(torch.equal(counts2, counts))
        self.assertTrue(torch.equal(model2.cap_weights, model.cap_weights))
        self.assertTrue(torch.equal(model2.layers[1].mlp.w1, model.layers[1].mlp.w1))
        return model, model2


class AugmentTest(unittest.TestCase):
    def test_each_image_is_a_shifted_crop_flipped_or_not(self):
        x = torch.randn(32, 1, 28, 28)
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=float(x.min()))
        out = augment(x, torch.Generator().manual_seed(4))
        flipped = 0
        for i in range(32):
            crops = [padded[i, :, dy:dy + 28, dx:dx + 28] for dy in range(5) for dx in range(5)]
            plain = any(torch.equal(out[i], c) for c in crops)
            mirrored = any(torch.equal(out[i], c.flip(-1)) for c in crops)
            self.assertTrue(plain or mirrored, i)
            flipped += mirrored and not plain
        self.assertTrue(0 < flipped < 32, "about half the images are flipped")

    def test_erase_sets_one_8x8_square_to_the_background_in_some_images(self):
        x = torch.randn(64, 1, 28, 28) + 5
        shifted = augment(x, torch.Generator().manual_seed(9))
        erased = augment(x, torch.Generator().manual_seed(9), erase=True)
        changed = (erased != shifted)[:, 0]
        counts = changed.flatten(1).sum(1)
        self.assertTrue(((counts == 0) | (counts <= 64)).all())
        self.assertTrue(0 < int((counts > 0).sum()) < 64)
        background = float(x.min())
        for i in torch.nonzero(counts > 0).flatten().tolist():
            rows, cols = torch.nonzero(changed[i], as_tuple=True)
            self.assertLessEqual(int(rows.max() - rows.min()), 7)
            self.assertLessEqual(int(cols.max() - cols.min()), 7)
            self.assertTrue(bool((erased[i, 0][changed[i]] == background).all()))
