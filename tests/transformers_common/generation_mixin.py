"""A stand-in for transformers' GenerationTesterMixin (tests/generation/test_utils.py of its repository), which
its source distribution does not ship: the runner uses this file only when the downloaded sources lack the
real one. Written for this project, it checks what that mixin checks for a decoder-only model: every decoding
method with and without the KV cache, the shapes of everything generate() returns (per input row), assisted
and prompt-lookup decoding, left padding, inputs_embeds, continuing from a returned cache, 4D masks, and the
static cache with and without a compiled forward.
"""

import copy

import torch
from transformers import CompileConfig, GenerationMixin, StaticCache
from transformers.testing_utils import torch_device


class GenerationTesterMixin:
    max_new_tokens = 3

    def generation_inputs(self, batch_size=2):
        """A config whose generation never stops early, and the first `batch_size` rows of the common inputs."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        config.get_text_config(decoder=True).eos_token_id = None
        inputs = {name: tensor[:batch_size] for name, tensor in inputs.items()}
        return config, inputs

    def generative_models(self, batch_size=2, attn_implementation=None):
        for model_class in self.all_model_classes:
            if not model_class.can_generate():
                continue
            config, inputs = self.generation_inputs(batch_size)
            if attn_implementation is not None:
                config._attn_implementation = attn_implementation
            torch.manual_seed(0)
            yield model_class(config).to(torch_device).eval(), inputs

    def generate(self, model, inputs, **settings):
        settings = {"max_new_tokens": self.max_new_tokens, "do_sample": False, **settings}
        seed = settings.pop("seed", None)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            return model.generate(**inputs, **settings)

    def check_outputs_per_row(self, output, model, inputs, rows, use_cache):
        """Scores, logits, attentions and hidden states of generate(): one row per returned sequence."""
        # The decoder's own config: a ParScaleConfig keeps the sizes in its backbone_config.
        config, (_, length) = model.config.get_text_config(decoder=True), inputs["input_ids"].shape
        new_tokens = output.sequences.shape[1] - length
        self.assertEqual(len(output.scores), new_tokens)
        self.assertEqual(len(output.logits), new_tokens)
        for step in range(new_tokens):
            self.assertEqual(output.scores[step].shape, (rows, config.vocab_size))
            queries = 1 if use_cache and step > 0 else length + step
            self.assertEqual(len(output.hidden_states[step]), config.num_hidden_layers + 1)
            for states in output.hidden_states[step]:
                self.assertEqual(states.shape, (rows, queries, config.hidden_size))
            self.assertEqual(len(output.attentions[step]), config.num_hidden_layers)
            for attention in output.attentions[step]:
                self.assertEqual(attention.shape, (rows, config.num_attention_heads, queries, length + step))

    def test_inherits_generation_mixin(self):
        for model_class in self.all_model_classes:
            if model_class.can_generate():
                self.assertTrue(issubclass(model_class, GenerationMixin))

    def test_greedy_generate(self):
        for model, inputs in self.generative_models():
            output = self.generate(model, inputs)
            self.assertEqual(output.shape, (2, inputs["input_ids"].shape[1] + self.max_new_tokens))

    def test_greedy_generate_dict_outputs(self):
        for model, inputs in self.generative_models(attn_implementation="eager"):
            outputs = {}
            for use_cache in (False, True):
                outputs[use_cache] = output = self.generate(
                    model, inputs, use_cache=use_cache, return_dict_in_generate=True, output_scores=True,
                    output_logits=True, output_attentions=True, output_hidden_states=True,
                )  # fmt: skip
                self.check_outputs_per_row(output, model, inputs, rows=2, use_cache=use_cache)
            self.assertTrue(torch.equal(outputs[False].sequences, outputs[True].sequences))

    def test_sample_generate(self):
        for model, inputs in self.generative_models():
            settings = {"do_sample": True, "num_return_sequences": 2, "seed": 0, "top_k": 10}
            cached = self.generate(model, inputs, **settings)
            self.assertEqual(cached.shape, (4, inputs["input_ids"].shape[1] + self.max_new_tokens))
            self.assertTrue(torch.equal(cached, self.generate(model, inputs, **settings, use_cache=False)))

    def test_beam_search_generate(self):
        for model, inputs in self.generative_models(attn_implementation="eager"):
            settings = {"num_beams": 2, "num_return_sequences": 2, "length_penalty": 2.0}
            cached = self.generate(model, inputs, **settings, return_dict_in_generate=True, output_scores=True)
            self.assertEqual(cached.sequences.shape[0], 4)
            self.assertEqual(cached.sequences_scores.shape, (4,))
            uncached = self.generate(model, inputs, **settings, use_cache=False)
            self.assertTrue(torch.equal(cached.sequences, uncached))

    def test_beam_sample_generate(self):
        for model, inputs in self.generative_models():
            settings = {"num_beams": 2, "do_sample": True, "seed": 0, "top_k": 10}
            cached = self.generate(model, inputs, **settings)
            self.assertEqual(cached.shape, (2, inputs["input_ids"].shape[1] + self.max_new_tokens))
            self.assertTrue(torch.equal(cached, self.generate(model, inputs, **settings, use_cache=False)))

    def test_assisted_decoding_matches_greedy_search(self):
        for model, inputs in self.generative_models(batch_size=1, attn_implementation="eager"):
            assistant = copy.deepcopy(model)
            settings = {"return_dict_in_generate": True, "output_scores": True, "output_logits": True,
                        "output_attentions": True, "output_hidden_states": True, "max_new_tokens": 4}  # fmt: skip
            greedy = self.generate(model, inputs, **settings)
            assisted = self.generate(model, inputs, assistant_model=assistant, **settings)
            self.assertTrue(torch.equal(greedy.sequences, assisted.sequences))
            self.check_outputs_per_row(assisted, model, inputs, rows=1, use_cache=True)

    def test_prompt_lookup_decoding_matches_greedy_search(self):
        for model, inputs in self.generative_models(batch_size=1):
            greedy = self.generate(model, inputs, max_new_tokens=4)
            lookup = self.generate(model, inputs, max_new_tokens=4, prompt_lookup_num_tokens=2,
                                   max_matching_ngram_size=1)
            self.assertTrue(torch.equal(greedy, lookup))

    def test_assisted_decoding_sample(self):
        for model, inputs in self.generative_models(batch_size=1):
            output = self.generate(model, inputs, assistant_model=copy.deepcopy(model), do_sample=True, seed=0)
            self.assertEqual(output.shape, (1, inputs["input_ids"].shape[1] + self.max_new_tokens))

    def test_left_padding_compatibility(self):
        for model, inputs in self.generative_models():
            input_ids = inputs["input_ids"]
            pad = torch.full((input_ids.shape[0], 3), model.config.get_text_config().pad_token_id, device=torch_device)
            mask = torch.ones_like(input_ids)
            padded_mask = torch.cat([torch.zeros_like(pad), mask], dim=1)
            with torch.no_grad():
                logits = model(input_ids, attention_mask=mask).logits[:, -1]
                padded = model(
                    torch.cat([pad, input_ids], dim=1),
                    attention_mask=padded_mask,
                    position_ids=(padded_mask.cumsum(-1) - 1).clamp(min=0),
                ).logits[:, -1]
            torch.testing.assert_close(padded, logits, rtol=1e-5, atol=1e-5)

    def test_generate_from_inputs_embeds(self):
        for model, inputs in self.generative_models():
            embeds = model.get_input_embeddings()(inputs["input_ids"])
            from_ids = self.generate(model, inputs)[:, inputs["input_ids"].shape[1] :]
            from_embeds = self.generate(model, {"inputs_embeds": embeds, "attention_mask": inputs["attention_mask"]})
            self.assertTrue(torch.equal(from_ids, from_embeds))

    def test_generate_continue_from_cache(self):
        for model, inputs in self.generative_models():
            at_once = self.generate(model, inputs, max_new_tokens=6)
            first = self.generate(model, inputs, max_new_tokens=3, return_dict_in_generate=True)
            mask = torch.cat([inputs["attention_mask"],
                              torch.ones_like(first.sequences[:, inputs["input_ids"].shape[1] :])], dim=1)
            continued = self.generate(
                model, {"input_ids": first.sequences, "attention_mask": mask}, cache=first.cache, max_new_tokens=3
            )
            self.assertTrue(torch.equal(at_once, continued))

    def _get_attention_shape(self, batch_size, seq_length, config):
        """The keys' and values' shapes in the cache (the hook of the same name upstream: a model whose cache is
        laid out otherwise declares its layout by overriding it)."""
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (batch_size, config.num_key_value_heads, seq_length, head_dim)
        return shape, shape

    def test_past_key_values_format(self):
        for model, inputs in self.generative_models():
            with torch.no_grad():
                cache = model(**inputs, use_cache=True).cache
            config = model.config.get_text_config(decoder=True)
            key_shape, value_shape = self._get_attention_shape(*inputs["input_ids"].shape, config)
            self.assertEqual(len(cache.layers), config.num_hidden_layers)
            for layer in cache.layers:
                self.assertEqual(layer.keys.shape, key_shape)
                self.assertEqual(layer.values.shape, value_shape)

    def test_generate_with_static_cache(self):
        for model, inputs in self.generative_models():
            dynamic = self.generate(model, inputs)
            static = self.generate(model, inputs, cache_implementation="static", return_dict_in_generate=True)
            self.assertIsInstance(static.cache, StaticCache)
            self.assertTrue(torch.equal(dynamic, static.sequences))
            sampled = {
                implementation: self.generate(model, inputs, do_sample=True, seed=0,
                                              cache_implementation=implementation)
                for implementation in (None, "static")
            }
            self.assertTrue(torch.equal(sampled[None], sampled["static"]))

    def test_generate_compile_model_forward_fullgraph(self):
        for model, inputs in self.generative_models():
            compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
            compile_config._compile_all_devices = True  # also on CPU
            eager = self.generate(model, inputs, max_new_tokens=4)
            compiled = self.generate(
                model, inputs, max_new_tokens=4, cache_implementation="static", compile_config=compile_config
            )
            self.assertTrue(hasattr(model, "_compiled_call"))
            self.assertTrue(torch.equal(eager, compiled))

    def test_generate_methods_with_logits_to_keep(self):
        for model, inputs in self.generative_models():
            self.assertTrue(torch.equal(self.generate(model, inputs), self.generate(model, inputs, logits_to_keep=0)))

    def test_custom_4d_attention_mask(self):
        for model, inputs in self.generative_models():
            # Two rows of 4 and 3 tokens packed into one row of 7 by a block-diagonal causal mask.
            rows = inputs["input_ids"][:, :4], inputs["input_ids"][1:, 4:7]
            packed = torch.cat([rows[0][:1], rows[1]], dim=1)
            allowed = torch.zeros(7, 7, dtype=torch.bool, device=torch_device)
            allowed[:4, :4] = torch.ones(4, 4, dtype=torch.bool).tril()
            allowed[4:, 4:] = torch.ones(3, 3, dtype=torch.bool).tril()
            mask_4d = torch.zeros(1, 1, 7, 7, dtype=model.dtype, device=torch_device)
            mask_4d = mask_4d.masked_fill(~allowed, torch.finfo(model.dtype).min)
            position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2]], device=torch_device)
            with torch.no_grad():
                separate = [model(row[:1]).logits[0] for row in rows]
                together = model(packed, attention_mask=mask_4d, position_ids=position_ids).logits[0]
            torch.testing.assert_close(together[:4], separate[0], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(together[4:], separate[1], rtol=1e-4, atol=1e-4)
