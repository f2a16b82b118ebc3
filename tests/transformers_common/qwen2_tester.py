"""transformers' common model tests (ModelTesterMixin and the generation and export mixins) against stock Qwen2
and the ParScale model at P = 1 and P = 2, all with the same tester.

The runner (`run.py`) copies this file into a package beside the installed transformers version's
tests/test_modeling_common.py; the Qwen2 tester of transformers' repository is not in its source
distribution, so the tester is written here: a tiny Qwen2 backbone (2 layers, width 32, 4 heads with
grouped-query attention on 2 key/value heads), a batch of 13 rows of 7 tokens with a random padding mask.
The three test classes differ only in the model classes and their config.
"""

import unittest

from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Model
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES

from models import Qwen2ParScaleConfig, Qwen2ParScaleForCausalLM, Qwen2ParScaleModel

from .generation.test_utils import GenerationTesterMixin
from .test_modeling_common import ModelTesterMixin, ids_tensor, random_attention_mask

# Several common tests find a model's base class and LM head by name in transformers' Auto mappings, which list
# only the models built into transformers (AutoModel.register does not add to them); with these entries those
# tests treat the ParScale classes as they treat a built-in model's instead of skipping them.
MODEL_MAPPING_NAMES.setdefault(Qwen2ParScaleConfig.model_type, Qwen2ParScaleModel.__name__)
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault(Qwen2ParScaleConfig.model_type, Qwen2ParScaleForCausalLM.__name__)


class Qwen2ModelTester:
    """Builds a tiny config of `config_class` and the inputs of the common tests."""

    def __init__(self, parent, config_class, batch_size=13, seq_length=7, **config_fields):
        self.parent = parent
        self.config_class = config_class
        self.batch_size, self.seq_length = batch_size, seq_length
        self.is_training = True
        self.vocab_size = 99
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.num_key_value_heads = 2
        self.pad_token_id = 0
        self.config_fields = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "intermediate_size": 37,
            "hidden_act": "silu",
            "max_position_embeddings": 512,
            "initializer_range": 0.02,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": 1,
            "eos_token_id": 2,
            **config_fields,
        }

    def get_config(self):
        return self.config_class(**self.config_fields)

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class StockQwen2Test(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """transformers' own Qwen2: the reference outcome of every test."""

    all_model_classes = (Qwen2Model, Qwen2ForCausalLM)

    def setUp(self):
        self.model_tester = Qwen2ModelTester(self, Qwen2Config)


class ParScaleP1Test(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """The ParScale classes with one stream (no prefix, no aggregator): Qwen2 itself."""

    # The mixin runs this test only for models whose config file has a copyright year of 2023 or later.
    test_can_init_all_missing_weights_before_2023 = True
    all_model_classes = (Qwen2ParScaleModel, Qwen2ParScaleForCausalLM)

    def setUp(self):
        self.model_tester = Qwen2ModelTester(self, Qwen2ParScaleConfig, parscale_n=1)


class ParScaleP2Test(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    """The ParScale classes with two streams and a 3-token prefix per stream."""

    test_can_init_all_missing_weights_before_2023 = True
    all_model_classes = (Qwen2ParScaleModel, Qwen2ParScaleForCausalLM)

    def setUp(self):
        self.model_tester = Qwen2ModelTester(self, Qwen2ParScaleConfig, parscale_n=2, parscale_n_tokens=3)
