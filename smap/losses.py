"""Stage-1 targets and losses: the pad-weighted MSE (and an optional token cross-entropy), the CTC
loss of a CTC-compressed mapper's head, and cross-entropy on response tokens; and the reading of
an output back as tokens (`nearest_tokens`), which Stage-1 validation and inference share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PadTargets:
    target: torch.Tensor  # (batch, frames', dim): token embeddings, then the pad embedding
    weight: torch.Tensor  # (batch, frames'): alpha at content, 1 at pad, 0 past the output length
    n_cut: int  # utterances whose tokens did not all fit in the mapper's output
    ids: torch.Tensor  # (batch, frames'): the token id of each position (pad_id after the content)
    content: torch.Tensor  # (batch, frames') bool: the positions that hold a transcript token


def pad_targets(
    token_ids: list[torch.Tensor],
    out_lengths: torch.Tensor,
    embedding: torch.Tensor,
    pad_id: int,
    alpha: float = 5.0,
) -> PadTargets:
    """Stage-1 targets for a batch.

    token_ids: one (n_tokens,) tensor per utterance; out_lengths: (batch,) mapper output lengths;
    embedding: (vocab, dim) LLM input-embedding matrix. Position j of utterance b is the embedding
    of token j for j < n_tokens, and the pad-token embedding up to out_lengths[b]. Tokens that do
    not fit (n_tokens > out_lengths[b]) are cut and the utterance is counted in `n_cut`.
    """
    batch, frames = len(token_ids), int(out_lengths.max())
    device = embedding.device
    ids = torch.full((batch, frames), pad_id, dtype=torch.long, device=device)
    weight = torch.zeros(batch, frames, device=device)
    content = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    n_cut = 0
    for b, toks in enumerate(token_ids):
        n_out = int(out_lengths[b])
        n = min(len(toks), n_out)
        n_cut += int(len(toks) > n_out)
        ids[b, :n] = toks[:n].to(device)
        weight[b, :n] = alpha
        weight[b, n:n_out] = 1.0
        content[b, :n] = True
    return PadTargets(F.embedding(ids, embedding), weight, n_cut, ids, content)


def content_length(is_pad: torch.Tensor) -> int:
    """is_pad (frames',) bool: which of one output's vectors read as the pad token -> how many come
    before the first that does. Stage 1 pads its targets with the pad embedding, so that is where
    the mapper says the transcript ends."""
    pads = is_pad.nonzero()
    return int(pads[0, 0]) if len(pads) else len(is_pad)


def nearest_tokens(pred: torch.Tensor, length: int, unit_embedding: torch.Tensor, pad_id: int) -> list[int]:
    """Decode one output (frames', dim) by cosine-nearest token embedding, up to the first pad;
    unit_embedding (vocab, dim): the embedding matrix with L2-normalised rows."""
    sims = F.normalize(pred[:length].float(), dim=-1) @ unit_embedding.T
    ids = sims.argmax(-1)
    return ids[: content_length(ids == pad_id)].tolist()


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pad-weighted MSE of SpeechMapper's Stage 1.

        loss = sum_{b,j} w[b,j] * mean_d (pred[b,j,d] - target[b,j,d])^2  /  sum_{b,j} w[b,j]

    pred, target: (batch, frames', dim); weight: (batch, frames') with w = alpha at content
    positions, 1 at pad positions and 0 beyond each output's length, so content errors count
    alpha times a pad error and the loss does not depend on batch size or padding.
    """
    per_pos = (pred.float() - target.float()).pow(2).mean(-1)
    return (per_pos * weight).sum() / weight.sum().clamp_min(1e-8)


def cosine_token_ce(pred: torch.Tensor, targets: PadTargets, unit_embedding: torch.Tensor,
                    vocab: torch.Tensor | None = None, scale: float = 20.0) -> torch.Tensor:
    """Cross-entropy over token embeddings at each content position of `targets` (not in the paper).

    logits[b, j, v] = scale * cos(pred[b, j], embedding[v]). The MSE's optimum at an uncertain
    position is the mean of the candidate embeddings; this term pushes towards one token, away from
    the rest. pred (batch, frames', dim); unit_embedding (vocab, dim), rows L2-normalised once by the
    caller (the table is frozen, the step is hot). vocab: (n,) sorted token ids that the softmax
    spans, unit_embedding then holding only their n rows; every target id must be among them.
    """
    if not targets.content.any():
        return pred.sum() * 0.0
    ids = targets.ids[targets.content]
    rows = ids if vocab is None else torch.searchsorted(vocab, ids)
    unit = F.normalize(pred[targets.content].float(), dim=-1)
    return F.cross_entropy(scale * unit @ unit_embedding.T, rows)


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
    """Mean CTC loss (per target label) over the rows with a target; logits (batch, frames, labels)
    with 0 the blank, lengths (batch,), targets one (n,) label tensor per row (empty: no target).
    Impossible alignments (more labels than frames) count as zero rather than infinity."""
    rows = [b for b, t in enumerate(targets) if len(t)]
    if not rows:
        return logits.sum() * 0.0
    if len(rows) < len(targets):  # copy the rows with a target (a scatter backwards) only when some have none
        logits, lengths = logits[rows], lengths[rows]
    log_probs = F.log_softmax(logits.float(), -1).transpose(0, 1)  # (frames, rows, labels)
    return F.ctc_loss(log_probs, torch.cat([targets[b] for b in rows]).to(logits.device), lengths,
                      torch.tensor([len(targets[b]) for b in rows], device=logits.device), zero_infinity=True)


@torch.no_grad()
def ctc_align(logits: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
    """The most likely CTC path of each row's target (Viterbi): logits (batch, frames, labels) with 0
    the blank, lengths (batch,), targets one (n,) label tensor per row -> (batch, frames) labels, one
    per frame (0: blank), whose runs read as the target: token k's frames hold its label, and two
    equal labels in a row are parted by a blank. A row with no target, or one its frames cannot
    hold, keeps its greedy labels."""
    batch, frames, _ = logits.shape
    greedy = logits.argmax(-1)
    n = torch.tensor([len(t) for t in targets], device=logits.device)
    if not batch or int(n.max()) == 0:
        return greedy
    states = 2 * int(n.max()) + 1  # blank, t1, blank, t2, ..., blank
    ext = torch.zeros(batch, states, dtype=torch.long, device=logits.device)
    for b, t in enumerate(targets):
        ext[b, 1 : 2 * len(t) : 2] = t.to(logits.device)
    real = torch.arange(states, device=logits.device)[None] < (2 * n + 1)[:, None]
    # A label may skip the blank before it unless it repeats the label two states back.
    skip = (ext > 0) & (ext != F.pad(ext[:, :-2], (2, 0), value=-1))
    log_probs = F.log_softmax(logits.float(), -1)
    neg = torch.tensor(float("-inf"), device=logits.device)
    # What the loop reads, made once rather than once a frame: each state's log-probability at every
    # frame (-inf at the states a row does not have), and which rows are still within their frames.
    emit = torch.where(real[:, None], log_probs.gather(2, ext[:, None].expand(-1, frames, -1)), neg)
    live = (torch.arange(frames, device=logits.device)[:, None] < lengths[None])[..., None]  # (frames, batch, 1)
    score = emit[:, 0].clone()
    score[:, 2:] = float("-inf")  # a path starts at the first blank or the first label
    back = torch.zeros(frames, batch, states, dtype=torch.uint8, device=logits.device)  # 0, 1 or 2 states back
    for t in range(1, frames):
        moves = torch.stack([score, F.pad(score[:, :-1], (1, 0), value=float("-inf")),
                             torch.where(skip, F.pad(score[:, :-2], (2, 0), value=float("-inf")), neg)])
        best, move = moves.max(0)
        # past its end a row stands still
        score, back[t] = torch.where(live[t], best + emit[:, t], score), torch.where(live[t], move, 0)
    last = (2 * n).clamp_max(states - 1)
    ends = torch.stack([score.gather(1, last[:, None])[:, 0], score.gather(1, (last - 1).clamp_min(0)[:, None])[:, 0]])
    s = last - ends.argmax(0)
    path = torch.zeros(batch, frames, dtype=torch.long, device=logits.device)
    for t in range(frames - 1, -1, -1):
        path[:, t] = ext.gather(1, s[:, None])[:, 0]
        s = s - back[t].gather(1, s[:, None])[:, 0].long()
    ok = (n > 0) & torch.isfinite(ends.max(0).values)
    return torch.where(ok[:, None], path, greedy)


def response_ce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Token-level cross-entropy; logits (n, vocab) or (batch, seq, vocab), labels matching,
    already aligned (logit i predicts label i); `ignore_index` marks non-response positions."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=ignore_index)
