"""The tester that every family's test classes share (the runner copies this file into the assembled test
package beside transformers' tests/test_modeling_common.py, as `model_tester.py`).

transformers' per-model testers are not in its source distribution, so this one is written here: a tiny
decoder (2 layers, width 32, 4 heads with grouped-query attention on 2 key/value heads, head size 8), a batch
of 13 rows of 7 tokens with a random padding mask. `make_config` turns these fields into the config of the
class under test: the family's own config, or a ParScale config around it.
"""

from .test_modeling_common import ids_tensor, random_attention_mask


class DecoderModelTester:
    """Builds a tiny config and the inputs of the common tests; the mixins read the sizes as attributes."""

    def __init__(self, parent, make_config, batch_size=13, seq_length=7):
        self.parent = parent
        self.make_config = make_config
        self.batch_size, self.seq_length = batch_size, seq_length
        self.is_training = True
        self.vocab_size = 99
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.num_key_value_heads = 2
        self.head_dim = self.hidden_size // self.num_attention_heads
        self.pad_token_id = 0
        self.config_fields = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": 37,
            "hidden_act": "silu",
            "max_position_embeddings": 512,
            "initializer_range": 0.02,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }

    def get_config(self):
        return self.make_config(**self.config_fields)

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class ParScaleGenerationHooks:
    """Mixed into the ParScale test classes at P = 2 (before the mixins): the two places where transformers'
    generation tests ask a model to declare how it differs, answered for ParScale.

    - The KV cache holds the caller's batch with the P streams folded into the head axis: (B, P * kv_heads, S, d)
      (models/stream_cache.py). Upstream's own test classes declare other layouts (DeepSeek's latent cache) the
      same way, through `_get_attention_shape`; the batch checked stays the caller's.
    - The output checks read the decoder's sizes from `config.text_config`; a ParScaleConfig keeps them in
      `backbone_config` (its get_text_config()), so they are handed that config (a flat Qwen2ParScaleConfig is
      its own).
    """

    def _get_attention_shape(self, batch_size, seq_length, config):
        n_streams = self.model_tester.get_config().parscale_n
        shapes = super()._get_attention_shape(batch_size, seq_length, config)
        return tuple((shape[0], shape[1] * n_streams, *shape[2:]) for shape in shapes)

    def _check_generate_outputs(self, output, config, *args, **kwargs):
        super()._check_generate_outputs(output, config.get_text_config(decoder=True), *args, **kwargs)
