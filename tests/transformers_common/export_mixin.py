"""A stand-in for transformers' ExportTesterMixin (tests/exporters/test_export.py of its repository, which
ModelTesterMixin derives from), which its source distribution does not ship: the runner uses this file only
when the downloaded sources lack the real one. Written for this project: every model class exports with
torch.export on the common inputs, and the exported program computes what the model computes."""

import torch


class ExportTesterMixin:
    def test_torch_export(self):
        if not getattr(self, "test_torch_exportable", True):
            self.skipTest("the test class marks the model as not exportable")
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            with torch.no_grad():
                expected = model(**inputs, use_cache=False)[0]
                program = torch.export.export(model, args=(), kwargs={**inputs, "use_cache": False}, strict=False)
                exported = program.module()(**inputs, use_cache=False)[0]
            torch.testing.assert_close(exported, expected, rtol=1e-5, atol=1e-5)
