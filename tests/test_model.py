import torch
import torch.nn.functional as F
from torch import nn

from rnnlm.config import ModelConfig, load_config
from rnnlm.model import CharRNN


def test_onehot_encoding_equals_a_dense_one_hot_through_torch_nn():
    torch.manual_seed(0)
    model = CharRNN(7, ModelConfig(cell="lstm", hidden_size=5, num_layers=2, encoding="onehot")).double()
    reference = nn.LSTM(7, 5, 2).double()
    reference.load_state_dict(model.rnn.state_dict())
    tokens = torch.randint(0, 7, (3, 4))
    logits, (h, c) = model(tokens)
    out, (h_ref, c_ref) = reference(F.one_hot(tokens.t(), 7).double())
    assert torch.allclose(logits, model.decoder(out).transpose(0, 1), atol=1e-12)
    assert torch.allclose(h, h_ref, atol=1e-12) and torch.allclose(c, c_ref, atol=1e-12)


def test_state_carries_across_calls():
    torch.manual_seed(0)
    for cell in ("rnn", "lstm", "gru"):
        model = CharRNN(6, ModelConfig(cell=cell, hidden_size=8, num_layers=2, encoding="embedding", embed_dim=4)).eval()
        tokens = torch.randint(0, 6, (2, 10))
        whole, _ = model(tokens)
        first, state = model(tokens[:, :6])
        second, _ = model(tokens[:, 6:], state)
        assert torch.allclose(whole, torch.cat([first, second], 1), atol=1e-6)


def test_init_state_is_zero_and_shaped_for_the_cell():
    model = CharRNN(5, ModelConfig(cell="lstm", hidden_size=3, num_layers=2))
    h, c = model.init_state(4)
    assert h.shape == c.shape == (2, 4, 3) and not h.any()
    logits_zero, _ = model(torch.zeros(4, 2, dtype=torch.long), (h, c))
    logits_none, _ = model(torch.zeros(4, 2, dtype=torch.long))
    assert torch.equal(logits_zero, logits_none)


def test_lstm_forget_bias_starts_the_network_remembering():
    model = CharRNN(5, ModelConfig(cell="lstm", hidden_size=3, num_layers=2, forget_bias=1.0))
    for layer in range(2):
        forget = getattr(model.rnn, f"bias_ih_l{layer}")[3:6] + getattr(model.rnn, f"bias_hh_l{layer}")[3:6]
        assert torch.equal(forget, torch.ones(3))
    plain = CharRNN(5, ModelConfig(cell="lstm", hidden_size=3, num_layers=1, forget_bias=0.0))
    assert plain.rnn.bias_ih_l0.abs().max() <= 3 ** -0.5  # torch.nn's uniform(-1/sqrt(H), 1/sqrt(H)) untouched


def test_the_memory_a_run_needs_counts_the_logits_of_a_large_vocabulary():
    """A 1x64 model of 63,711 CJK characters peaked at 6 GB training 16 x 32 windows where the check counted
    0.33 GB: the logits, their log-softmax and its gradient (3 floats a symbol, row and step) were left out."""
    from rnnlm.model import memory_needed

    cfg = load_config(None, ["model.hidden_size=64", "model.num_layers=1"]).model
    small, large = (memory_needed(vocab, cfg, 16, 32) for vocab in (100, 63_713))
    weights = memory_needed(63_713, cfg)
    assert large - 4 * weights >= 3 * 63_713 * 16 * 32 * 4 > 50 * (small - 4 * memory_needed(100, cfg))
