"""transformers' common model tests (ModelTesterMixin and the generation mixin) on the Qwen2 family: stock
Qwen2, the released layout Qwen2ParScale at P = 1 and P = 2, and ParScaleForCausalLM on a Qwen2 backbone at
P = 2. The runner copies this file into the assembled test package; the tester is `model_tester.py`."""

import unittest
from functools import partial

from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Model
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES

from models import (
    ParScaleConfig,
    ParScaleForCausalLM,
    Qwen2ParScaleConfig,
    Qwen2ParScaleForCausalLM,
    Qwen2ParScaleModel,
)

from .generation.test_utils import GenerationTesterMixin
from .model_tester import DecoderModelTester, ParScaleGenerationHooks
from .test_modeling_common import ModelTesterMixin

# Several common tests find a model's base class and LM head by name in transformers' Auto mappings, which list
# only the models built into transformers (AutoModel.register does not add to them); with these entries those
# tests treat the ParScale classes as they treat a built-in model's instead of skipping them.
MODEL_MAPPING_NAMES.setdefault(Qwen2ParScaleConfig.model_type, Qwen2ParScaleModel.__name__)
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault(Qwen2ParScaleConfig.model_type, Qwen2ParScaleForCausalLM.__name__)
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault(ParScaleConfig.model_type, ParScaleForCausalLM.__name__)


def parscale_on_qwen2(parscale_n, parscale_n_tokens=3, **qwen2_fields):
    return ParScaleConfig(backbone_config=Qwen2Config(**qwen2_fields), parscale_n=parscale_n,
                          parscale_n_tokens=parscale_n_tokens)  # fmt: skip


class StockQwen2Test(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """transformers' own Qwen2: the reference outcome of every test."""

    all_model_classes = (Qwen2Model, Qwen2ForCausalLM)

    def setUp(self):
        self.model_tester = DecoderModelTester(self, Qwen2Config)


class ParScaleP1Test(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """The released layout with one stream (no prefix, no aggregator): Qwen2 itself."""

    # The mixin runs this test only for models whose config file has a copyright year of 2023 or later.
    test_can_init_all_missing_weights_before_2023 = True
    all_model_classes = (Qwen2ParScaleModel, Qwen2ParScaleForCausalLM)

    def setUp(self):
        self.model_tester = DecoderModelTester(self, partial(Qwen2ParScaleConfig, parscale_n=1))


class ParScaleP2Test(ParScaleGenerationHooks, ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """The released layout with two streams and a 3-token prefix per stream."""

    test_can_init_all_missing_weights_before_2023 = True
    all_model_classes = (Qwen2ParScaleModel, Qwen2ParScaleForCausalLM)

    def setUp(self):
        self.model_tester = DecoderModelTester(self, partial(Qwen2ParScaleConfig, parscale_n=2, parscale_n_tokens=3))


class ParScaleLMQwen2P2Test(ParScaleGenerationHooks, ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """ParScaleForCausalLM on a Qwen2 backbone, two streams and a 3-token prefix per stream."""

    test_can_init_all_missing_weights_before_2023 = True
    all_model_classes = (ParScaleForCausalLM,)

    def setUp(self):
        self.model_tester = DecoderModelTester(self, partial(parscale_on_qwen2, 2))
