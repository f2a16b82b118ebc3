"""transformers' common model tests (ModelTesterMixin and the generation mixin) on the Qwen3 family: stock
Qwen3, and ParScaleForCausalLM on a Qwen3 backbone at P = 1 and P = 2. The runner copies this file into the
assembled test package; the tester is `model_tester.py`."""

import unittest
from functools import partial

from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from models import ParScaleConfig, ParScaleForCausalLM

from .generation.test_utils import GenerationTesterMixin
from .model_tester import DecoderModelTester, ParScaleGenerationHooks
from .test_modeling_common import ModelTesterMixin

# As for the Qwen2 family: common tests look the LM head class up by name in this mapping.
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault(ParScaleConfig.model_type, ParScaleForCausalLM.__name__)


def parscale_on_qwen3(parscale_n, parscale_n_tokens=3, **qwen3_fields):
    return ParScaleConfig(backbone_config=Qwen3Config(**qwen3_fields), parscale_n=parscale_n,
                          parscale_n_tokens=parscale_n_tokens)  # fmt: skip


class StockQwen3Test(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """transformers' own Qwen3: the reference outcome of every test of this family."""

    all_model_classes = (Qwen3Model, Qwen3ForCausalLM)

    def setUp(self):
        self.model_tester = DecoderModelTester(self, Qwen3Config)


class ParScaleLMQwen3P1Test(ParScaleGenerationHooks, ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """ParScaleForCausalLM on a Qwen3 backbone with one stream: Qwen3 itself."""

    # The mixin runs this test only for models whose config file has a copyright year of 2023 or later.
    test_can_init_all_missing_weights_before_2023 = True
    all_model_classes = (ParScaleForCausalLM,)

    def setUp(self):
        self.model_tester = DecoderModelTester(self, partial(parscale_on_qwen3, 1))


class ParScaleLMQwen3P2Test(ParScaleGenerationHooks, ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """ParScaleForCausalLM on a Qwen3 backbone, two streams and a 3-token prefix per stream."""

    test_can_init_all_missing_weights_before_2023 = True
    all_model_classes = (ParScaleForCausalLM,)

    def setUp(self):
        self.model_tester = DecoderModelTester(self, partial(parscale_on_qwen3, 2))
