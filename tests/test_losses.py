import torch

from smap.losses import pad_targets, response_ce, weighted_mse


def test_pad_targets_and_weighted_mse_match_a_hand_computation():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # pad id 0
    tokens = [torch.tensor([1, 2]), torch.tensor([3, 1, 2])]
    out_len = torch.tensor([3, 2])  # second utterance: 3 tokens, 2 frames -> cut
    tg = pad_targets(tokens, out_len, emb, pad_id=0, alpha=5.0)
    assert tg.n_cut == 1
    assert tg.weight.tolist() == [[5.0, 5.0, 1.0], [5.0, 5.0, 0.0]]
    assert tg.target[0].tolist() == [[1, 0], [0, 2], [0, 0]]
    assert tg.target[1, :2].tolist() == [[3, 3], [1, 0]]

    pred = torch.zeros(2, 3, 2)
    pred[0, 2] = torch.tensor([1.0, 1.0])  # pad position off by (1, 1)
    pred[1, 2] = torch.tensor([9.0, 9.0])  # beyond the output length: weight 0, must not count
    # per-position means: utt0 [(1+0)/2, (0+4)/2, (1+1)/2] = [0.5, 2, 1]; utt1 [(9+9)/2, (1+0)/2] = [9, 0.5]
    expected = (5 * 0.5 + 5 * 2 + 1 * 1 + 5 * 9 + 5 * 0.5) / (5 + 5 + 1 + 5 + 5)
    assert abs(weighted_mse(pred, tg.target, tg.weight).item() - expected) < 1e-6


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
