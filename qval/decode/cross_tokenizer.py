"""Cross-tokenizer drafting: a draft model with another tokenizer proposes through text (``cross-tokenizer-draft``).

The target's context is decoded to text, the text is tokenised for the draft model, the draft model drafts greedily,
and its draft is decoded to text and tokenised for the target: the draft the engine verifies is a chain of *target*
tokens. Both conversions are incremental (``TextBridge``): only the tokens new since the last step are decoded, and
only a short window at the end of the draft-side ids is tokenised again, so a step costs the same at token 500 as
at token 5 (tokenising a whole 600-token context for SmolLM2 takes milliseconds: as long as a draft forward).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .engine import Draft
from .policies import DecodePolicy

REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that do not make a whole UTF-8 character
LOOKBEHIND = 4  # draft ids re-tokenised with each step's new text, so a word split across steps is joined again


class CrossTokenizerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A qval model source (entry point of `qval.models`) that loads from its name alone, loaded in the target's
    # dtype onto its device; the target's own source name reuses the loaded target (a valid, degenerate pair).
    draft: str = "smollm2-135m-instruct"
    num_draft: int = Field(default=4, ge=1, le=64)  # draft-model tokens per step (UAG's num_assistant_tokens)

    @field_validator("draft")
    @classmethod
    def _known_source(cls, name: str) -> str:
        from ..models.base import ServedModelSource
        from ..registry import REGISTRY

        names = REGISTRY.names("models")
        if name not in names:
            raise ValueError(f"draft {name!r} is not a model source; one of: {', '.join(sorted(names))}")
        source = REGISTRY.get("models", name)
        if issubclass(source, ServedModelSource):
            raise ValueError(f"draft {name!r} is served by an engine; the draft model must run in the worker")
        try:
            source.Params.model_validate({})
        except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError: the source needs params (hf: path)
            raise ValueError(f"draft {name!r} needs params of its own; give a source that loads from its name") from exc
        return name


class TextBridge:
    """Keeps a draft-tokenizer view of a growing target-token context, and turns draft text back into target ids.

    ``target_ids`` is the target context converted so far; ``text`` its text; ``draft_ids`` a tokenisation of that
    text by the draft tokenizer (not always the one a whole re-tokenisation would give: only its last LOOKBEHIND ids
    are re-tokenised with new text, as UAG re-tokenises a lookbehind window; the text is always exact).

    Special tokens: a target special token the draft tokenizer has no token of its own for (Gemma's ``<bos>``) is
    left out of the text, as UAG's ``skip_special_tokens`` does; one both know (ChatML's ``<|im_start|>`` when the
    two tokenizers are the same) stays, so the draft model sees its chat template. A draft special token the target
    does not know (SmolLM2's ``<|im_end|>`` for Gemma) ends the draft.
    """

    def __init__(self, target_tokenizer: Any, draft_tokenizer: Any):
        self.ttok, self.dtok = target_tokenizer, draft_tokenizer
        dvocab, tvocab = draft_tokenizer.get_vocab(), target_tokenizer.get_vocab()
        self.skip = {
            i for i in target_tokenizer.all_special_ids if target_tokenizer.convert_ids_to_tokens(i) not in dvocab
        }
        self.stop = {
            i for i in draft_tokenizer.all_special_ids if draft_tokenizer.convert_ids_to_tokens(i) not in tvocab
        }
        bos = draft_tokenizer.bos_token_id
        # A draft tokenizer that starts every text with BOS (Llama's) gets it once, at the start of the context.
        self.draft_bos = [bos] if bos is not None and draft_tokenizer("a")["input_ids"][:1] == [bos] else []
        self.reset()

    def reset(self) -> None:
        self.target_ids: list[int] = []
        self.text = ""
        self.draft_ids: list[int] = []

    def _tdecode(self, ids: list[int]) -> str:
        return self.ttok.decode([i for i in ids if i not in self.skip], skip_special_tokens=False)

    def _ddecode(self, ids: list[int]) -> str:
        return self.dtok.decode(ids, skip_special_tokens=False)

    def _dencode(self, text: str) -> list[int]:
        return list(self.dtok(text, add_special_tokens=False)["input_ids"])

    def draft_context(self, context: list[int]) -> list[int]:
        """The draft-tokenizer ids of ``context``'s text (BOS first where the draft tokenizer adds one)."""
        n = len(self.target_ids)
        new_text = None
        if n and context[:n] == self.target_ids:
            new_text = _suffix_text(self._tdecode, context[max(n - 1, 0) : n], context[n:])
        if new_text is None:  # the first step of a generation, or a context that does not extend the last one
            self.text = self._tdecode(context)
            self.draft_ids = self._dencode(self.text)
        elif new_text:
            keep = self.draft_ids[:-LOOKBEHIND]
            window = self._ddecode(self.draft_ids[-LOOKBEHIND:])
            if self.draft_ids and self.text.endswith(window):
                self.draft_ids = keep + self._dencode(window + new_text)
            else:  # the window's first id holds half a character: tokenise the whole text again
                self.draft_ids = self._dencode(self.text + new_text)
            self.text += new_text
        self.target_ids = list(context)
        return self.draft_bos + self.draft_ids

    def draft_text(self, context_ids: list[int], drafted: list[int]) -> str:
        """The text the draft tokens add after the draft context (up to a draft special token the target lacks;
        a trailing half character is cut, since the next draft token would complete it)."""
        for i, tok in enumerate(drafted):
            if tok in self.stop:
                drafted = drafted[:i]
                break
        if not drafted:
            return ""
        text = _suffix_text(self._ddecode, context_ids[-LOOKBEHIND:], drafted)
        if text is None:
            text = self._ddecode(drafted)
        return text.rstrip(REPLACEMENT)

    def target_draft(self, context: list[int], text: str) -> list[int]:
        """Target ids that continue ``context`` with ``text``: the end of the context is tokenised again together
        with the text (the longest window whose ids come back unchanged), so a draft that continues a word the
        context ends in is tokenised as the target would; with no such window, the text alone."""
        if not text:
            return []
        for w in range(min(LOOKBEHIND, len(context)), 0, -1):
            tail = context[-w:]
            if any(t in self.skip for t in tail):
                continue
            ids = list(self.ttok(self._tdecode(tail) + text, add_special_tokens=False)["input_ids"])
            if ids[:w] == tail and len(ids) > w:
                return ids[w:]
        return list(self.ttok(text, add_special_tokens=False)["input_ids"])


def _suffix_text(decode, anchor: list[int], new: list[int]) -> str | None:
    """The text ``new`` adds after ``anchor`` (decoded together, so a decoder that treats the first token of a text
    specially, or bytes of one character split over both, come out right); None when it cannot be told apart."""
    if not anchor:
        return None
    before, both = decode(anchor), decode(anchor + new)
    if not both.startswith(before) or before.endswith(REPLACEMENT):
        return None
    return both[len(before) :]


class CrossTokenizerDrafter:
    """A draft model with its own tokenizer, drafting greedily for the target through ``TextBridge``; its KV cache
    is kept by ``ModelDrafter`` (cropped to the longest prefix it shares with the new draft context)."""

    def __init__(self, draft_model: Any, draft_tokenizer: Any, target_tokenizer: Any, num_draft: int):
        from .drafters import ModelDrafter

        self.inner = ModelDrafter(draft_model, num_draft)
        self.bridge = TextBridge(target_tokenizer, draft_tokenizer)

    def reset(self) -> None:
        self.inner.reset()
        self.bridge.reset()

    def propose(self, context: list[int], temperature: float = 0.0, generator=None) -> Draft:
        draft_context = self.bridge.draft_context(context)
        if not draft_context:  # nothing but special tokens the draft cannot read: nothing to draft from
            return Draft([])
        drafted = self.inner.propose(draft_context, 0.0).tokens  # greedy at every temperature: q is one-hot
        text = self.bridge.draft_text(draft_context, drafted)
        return Draft(self.bridge.target_draft(context, text))


class CrossTokenizerDraftPolicy(DecodePolicy):
    """Speculative decoding with a draft model whose tokenizer differs from the target's, through text:
    transformers' universal assisted generation (UAG; Timor et al. 2025, "Accelerating LLM Inference with Lossless
    Speculative Decoding Algorithms for Heterogeneous Vocabularies", ICML 2025, arXiv:2502.05202, and the Hugging
    Face blog post "Universal Assisted Generation: Faster Decoding with Any Assistant Model", 2024). The target's
    context is decoded to text and tokenised for the draft model, which drafts ``num_draft`` tokens greedily; they
    are decoded to text and tokenised for the target, and that chain of target tokens is verified as any draft.

    Lossless: the draft is a deterministic function of the context, so q is one-hot over the *target's* vocabulary.
    At T = 0 and under coupled sampling the engine accepts exact matches only; at T > 0 with rejection sampling the
    engine's one-hot rule (accept x with probability p(x), else sample p with x removed, renormalised) emits exactly
    p's distribution. Drafts stay greedy at T > 0, so acceptance falls as T rises; no draft distribution is sampled
    or passed on.

    Where qval's version differs from UAG (``AssistedCandidateGeneratorDifferentTokenizers``, the greedy path that
    the benchmark compares against):
    - the draft-side ids are kept incrementally: each step decodes only the new target tokens (with one token before
      them as an anchor) and re-tokenises them together with the last 4 draft ids' text, where UAG re-tokenises a
      10-token lookbehind window and aligns it by the longest common diagonal; the draft model's KV cache is cropped
      to the longest prefix it shares with the new ids and fed the rest (UAG crops by its discrepancy count);
    - the draft is turned into target ids by re-tokenising the last (up to 4) target tokens' text together with the
      draft's text and keeping what follows them when they come back unchanged (else the draft text alone), where
      UAG re-tokenises the last 10 draft ids' text and aligns it to the target's ids by the longest diagonal;
    - special tokens: UAG drops all of them from the text; qval keeps those the other tokenizer has as tokens too
      (so a pair sharing a chat template keeps it) and ends a draft at a draft special token the target lacks;
    - draft length is fixed (UAG's ``num_assistant_tokens_schedule`` "constant"); no confidence threshold; no
      sampled drafts at T > 0 (UAG at ``do_sample=True`` switches to USD, Timor et al.'s vocabulary-intersection
      method, which passes the draft's distribution over the shared tokens; qval's drafts stay one-hot).
    """

    name = "cross-tokenizer-draft"
    family = "draft-model"
    Params = CrossTokenizerParams

    def drafter(self, model):
        draft_model, draft_tokenizer = load_draft(self.params.draft, model)
        return CrossTokenizerDrafter(draft_model, draft_tokenizer, model.tokenizer, self.params.num_draft)


def load_draft(name: str, target: Any) -> tuple[Any, Any]:
    """(model, tokenizer) of the draft source ``name``, through qval's model registry as a worker loads a model, in
    the target's dtype and on its device; the target itself when ``name`` is the target's own source."""
    from ..models.base import LocalModel
    from ..registry import REGISTRY

    if name == getattr(target, "name", None):
        return target.model, target.tokenizer
    source_cls = REGISTRY.get("models", name)
    given = (
        {"dtype": str(target.model.dtype).removeprefix("torch.")} if "dtype" in source_cls.Params.model_fields else {}
    )
    loaded = source_cls(source_cls.Params.model_validate(given)).load(device=str(target.device))
    if not isinstance(loaded, LocalModel):
        raise ValueError(f"draft {name!r} did not load into the worker (it gave a {type(loaded).__name__})")
    return loaded.model, loaded.tokenizer
