import math

import torch
import torch.nn.functional as F

from smap.losses import content_length, cosine_token_ce, ctc_align, ctc_loss, pad_targets, response_ce, weighted_mse


def test_pad_targets_and_weighted_mse_match_a_hand_computation():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # pad id 0
    tokens = [torch.tensor([1, 2]), torch.tensor([3, 1, 2])]
    out_len = torch.tensor([3, 2])  # second utterance: 3 tokens, 2 frames -> cut
    tg = pad_targets(tokens, out_len, emb, pad_id=0, alpha=5.0)
    assert tg.n_cut == 1
    assert tg.weight.tolist() == [[5.0, 5.0, 1.0], [5.0, 5.0, 0.0]]
    assert tg.target[0].tolist() == [[1, 0], [0, 2], [0, 0]]
    assert tg.target[1, :2].tolist() == [[3, 3], [1, 0]]
    assert tg.content.tolist() == [[True, True, False], [True, True, False]]
    assert tg.ids[0].tolist() == [1, 2, 0] and tg.ids[1, :2].tolist() == [3, 1]

    pred = torch.zeros(2, 3, 2)
    pred[0, 2] = torch.tensor([1.0, 1.0])  # pad position off by (1, 1)
    pred[1, 2] = torch.tensor([9.0, 9.0])  # beyond the output length: weight 0, must not count
    # per-position means: utt0 [(1+0)/2, (0+4)/2, (1+1)/2] = [0.5, 2, 1]; utt1 [(9+9)/2, (1+0)/2] = [9, 0.5]
    expected = (5 * 0.5 + 5 * 2 + 1 * 1 + 5 * 9 + 5 * 0.5) / (5 + 5 + 1 + 5 + 5)
    assert abs(weighted_mse(pred, tg.target, tg.weight).item() - expected) < 1e-6


def test_content_length_ends_an_output_at_its_first_pad():
    # what Stage 1 was taught: the transcript, then pads; a pad mid-way ends it there
    assert content_length(torch.tensor([False, False, True, False, True])) == 2
    assert content_length(torch.tensor([True, False])) == 0
    assert content_length(torch.tensor([False, False, False])) == 3  # no pad: every vector is content
    assert content_length(torch.zeros(0, dtype=torch.bool)) == 0


def test_alpha_weighs_content_against_pad():
    emb = torch.eye(3)
    tg = pad_targets([torch.tensor([1])], torch.tensor([2]), emb, pad_id=0, alpha=2.0)
    pred = tg.target.clone()
    pred[0, 1, 0] += 1.0  # error only at the pad position: per-position mean 1/3
    assert abs(weighted_mse(pred, tg.target, tg.weight).item() - (1 / 3) / 3) < 1e-6


def test_response_ce_ignores_masked_labels():
    logits = torch.tensor([[[0.0, 10.0], [10.0, 0.0]]])
    assert response_ce(logits, torch.tensor([[1, -100]])).item() < 1e-3
    assert response_ce(logits, torch.tensor([[1, 1]])).item() > 4


def test_cosine_token_ce_matches_a_hand_computation_at_content_positions_only():
    emb = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
    tokens = [torch.tensor([1, 0]), torch.tensor([2, 1, 0])]
    lengths = torch.tensor([3, 1])  # utt1 keeps 1 of its 3 tokens; utt0's third frame is pad
    pred = torch.tensor([[[0.0, 5.0], [1.0, 1.0], [9.0, 9.0]], [[0.0, -1.0], [7.0, 7.0], [7.0, 7.0]]])

    def ce(cosines, target):  # scale 20, cross-entropy of one position
        logits = [20 * c for c in cosines]
        return -logits[target] + math.log(sum(math.exp(z) for z in logits))

    r = 1 / math.sqrt(2)
    expected = (ce([0, 1, 0], 1) + ce([r, r, -r], 0) + ce([0, -1, 0], 2)) / 3
    unit = torch.nn.functional.normalize(emb, dim=-1)
    tg = pad_targets(tokens, lengths, emb, pad_id=0)
    assert abs(cosine_token_ce(pred, tg, unit).item() - expected) < 1e-4
    no_tokens = pad_targets([torch.tensor([], dtype=torch.long)] * 2, lengths, emb, pad_id=0)
    assert cosine_token_ce(pred, no_tokens, unit).item() == 0.0

    # A token that is never a target (new row 1, the others move up by one) widens the full
    # softmax; restricted to the target tokens, the loss is the hand computation above again.
    wider = torch.cat([emb[:1], torch.tensor([[1.0, 1.0]]), emb[1:]])
    tg_wider = pad_targets([torch.tensor([2, 0]), torch.tensor([3, 2, 0])], lengths, wider, pad_id=0)
    unit_wider = torch.nn.functional.normalize(wider, dim=-1)
    assert cosine_token_ce(pred, tg_wider, unit_wider).item() > expected + 0.1
    vocab = torch.tensor([0, 2, 3])
    assert abs(cosine_token_ce(pred, tg_wider, unit_wider[vocab], vocab).item() - expected) < 1e-4


def test_ctc_loss_skips_rows_without_a_target_and_zeroes_impossible_ones():
    torch.manual_seed(0)
    logits, lengths = torch.randn(3, 6, 4), torch.tensor([6, 5, 2])
    targets = [torch.tensor([1, 2, 2]), torch.tensor([], dtype=torch.long), torch.tensor([3])]
    expected = F.ctc_loss(F.log_softmax(logits[[0, 2]], -1).transpose(0, 1), torch.tensor([1, 2, 2, 3]),
                          lengths[[0, 2]], torch.tensor([3, 1]))
    torch.testing.assert_close(ctc_loss(logits, lengths, targets), expected)
    # four labels with a repeat need five frames: two frames cannot hold them, and count zero, not infinity
    assert float(ctc_loss(logits[2:], lengths[2:], [torch.tensor([1, 1, 2, 3])])) == 0.0
    assert float(ctc_loss(logits, lengths, [torch.tensor([], dtype=torch.long)] * 3)) == 0.0


def _collapse(path):
    """A CTC path read as labels: repeats merged, blanks dropped."""
    return [int(p) for j, p in enumerate(path) if p and (j == 0 or p != path[j - 1])]


def test_ctc_align_finds_torchaudios_best_path_and_reads_as_the_target():
    import torchaudio.functional as TF

    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        logits = 3 * torch.randn(3, 20, 6, generator=g)
        lengths = torch.tensor([20, 14, 9])
        targets = [torch.tensor([2, 2, 5]), torch.tensor([1, 3, 1, 4]), torch.tensor([5])]
        path = ctc_align(logits, lengths, targets)
        for b in range(3):
            n = int(lengths[b])
            log_probs = logits[b : b + 1, :n].log_softmax(-1)
            best, _ = TF.forced_align(log_probs, targets[b][None], blank=0)
            score = log_probs[0, torch.arange(n), path[b, :n]].sum()
            torch.testing.assert_close(score, log_probs[0, torch.arange(n), best[0]].sum())
            assert _collapse(path[b, :n].tolist()) == targets[b].tolist()  # the repeat 2, 2 parted by a blank


def test_ctc_align_keeps_greedy_labels_where_no_alignment_exists():
    logits = torch.randn(2, 4, 6)
    # row 0: no target; row 1: 1, 1, 1 needs 5 frames (blanks between the repeats), it has 4
    path = ctc_align(logits, torch.tensor([4, 4]), [torch.tensor([], dtype=torch.long), torch.tensor([1, 1, 1])])
    assert torch.equal(path, logits.argmax(-1))
