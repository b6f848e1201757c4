"""Mixture-of-Memories `route: shifted`: a write is routed by the previous token (the one the token shift
makes its key of), a read by the current one, and the routing carries across calls."""
import torch

from palimpsest.memory import create_memory


def _mixture(route: str):
    torch.manual_seed(3)
    mom = create_memory("mom", 16, memories=4, top_k=1, shared=False, heads=1, chunk_size=1, route=route)
    with torch.no_grad():                     # feature 0 decides: +1 -> memory 2, -1 -> memory 3
        mom.router.weight.zero_()
        mom.router.weight[2, 0], mom.router.weight[3, 0] = 50.0, -50.0
    return mom


def _sequence():
    x = torch.randn(1, 8, 16)
    x[..., 0] = -1.0
    x[0, 3, 0] = 1.0                          # only token 3 points at memory 2
    return x


def _written(state, memory: int) -> bool:
    return bool(state.weights["W1"][:, memory].abs().sum() > 0)


def test_a_shifted_write_lands_where_the_previous_token_routes_it():
    x = _sequence()
    token, shifted = _mixture("token"), _mixture("shifted")
    assert _written(token(x[:, :4])[1], 2)              # the paper's routing writes token 3 into memory 2
    assert not _written(shifted(x[:, :4])[1], 2)        # shifted: token 3 is written where token 2 routes
    assert _written(shifted(x[:, :5])[1], 2)            # and token 4 goes where token 3 routes: memory 2


def test_shifted_routing_continues_across_calls():
    x = _sequence()
    mom = _mixture("shifted")
    whole, _ = mom(x)
    first, state = mom(x[:, :3])
    second, _ = mom(x[:, 3:], state=state)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-5)
    _, cut = mom(x[:, :3])
    cut.previous = None                       # without the carried token the next write is routed differently
    other, _ = mom(x[:, 3:], state=cut)
    assert not torch.allclose(other, second, atol=1e-5)
