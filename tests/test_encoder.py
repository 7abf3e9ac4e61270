"""The dense GCN task encoder against numbers worked out by hand and against PyG.

``TaskEncoder`` claims to compute exactly what two ``torch_geometric.nn.GCNConv``
layers + ``global_mean_pool`` + a linear head compute on each task's DAG
(edges predecessor -> successor, self-loops, symmetric normalisation), with
padding nodes ignored. The PyG comparisons run on real observations of the
paper environment, where tasks have 4 or 5 subtasks padded to J = 5. The actors
stack every agent's encoder and layers into one batched pass, and the COMA critic
applies its first layer in parts; the last tests check that each agent still
computes what its own weights compute alone, and the critic what its concatenated
input gives; ``sample`` draws what ``torch.multinomial`` draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmoffload.marl.encoder import AgentLinear, TaskEncoder, normalised_adjacency
from llmoffload.marl.env import OffloadEnv
from llmoffload.marl.nets import Actors, Critic
from llmoffload.marl.numerics import masked_log_softmax, sample
from llmoffload.model.scenario import load_scenario


def paper_observations(seeds: range, steps: int = 2) -> tuple[OffloadEnv, torch.Tensor]:
    """Every agent's observation after reset and after a few random valid steps, stacked."""
    env = OffloadEnv(load_scenario("paper"))
    rng = np.random.default_rng(0)
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        out += [o["observation"] for o in obs.values()]
        for _ in range(steps):  # later observations have some subtasks 'dispatched'
            acts = {}
            for agent in env.agents:
                valid = np.flatnonzero(obs[agent]["action_mask"])
                if len(valid):
                    acts[agent] = int(rng.choice(valid))
            obs, *_ = env.step(acts)
            out += [o["observation"] for o in obs.values()]
    return env, torch.from_numpy(np.stack(out))


class PygEncoder(torch.nn.Module):
    """The reference: GCNConv x2 -> global_mean_pool -> Linear, with a TaskEncoder's weights."""

    def __init__(self, dense: TaskEncoder) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        f = dense.gcn1.lin.in_features
        hidden = dense.gcn1.lin.out_features
        self.conv1 = GCNConv(f, hidden)
        self.conv2 = GCNConv(hidden, hidden)
        self.head = torch.nn.Linear(hidden, dense.head.out_features)
        self.to(dense.head.weight.dtype)  # before copying, so float64 weights stay exact
        with torch.no_grad():
            for conv, layer in ((self.conv1, dense.gcn1), (self.conv2, dense.gcn2)):
                conv.lin.weight.copy_(layer.lin.weight)
                conv.bias.copy_(layer.bias)
            self.head.load_state_dict(dense.head.state_dict())

    def forward(self, batch) -> torch.Tensor:
        from torch_geometric.nn import global_mean_pool

        h = torch.relu(self.conv1(batch.x, batch.edge_index))
        h = torch.relu(self.conv2(h, batch.edge_index))
        return self.head(global_mean_pool(h, batch.batch, size=batch.num_graphs))


def pyg_batch(nodes: torch.Tensor, adj: torch.Tensor):
    """Padded (B, J, F) nodes and (B, J, J) adjacency -> a PyG Batch of the real nodes only."""
    from torch_geometric.data import Batch, Data

    graphs = []
    for x, a in zip(nodes, adj, strict=True):
        real = x[:, 0] > 0.5
        n = int(real.sum())
        assert real[:n].all() and not real[n:].any(), "real nodes come first"
        assert not a[n:].any() and not a[:, n:].any(), "no edges touch padding"
        edge_index = a[:n, :n].nonzero().t().contiguous()  # row p -> column j
        graphs.append(Data(x=x[:n], edge_index=edge_index))
    return Batch.from_data_list(graphs)


# -- by hand -------------------------------------------------------------------


def test_normalised_adjacency_by_hand() -> None:
    # 0 -> 1. Degrees count incoming edges plus the self-loop: d0 = 0 + 1 = 1,
    # d1 = 1 + 1 = 2. A_hat[j, p] = 1 / sqrt(d_j d_p) for p -> j or p = j:
    # A_hat[0, 0] = 1, A_hat[1, 0] = 1/sqrt(2), A_hat[1, 1] = 1/2, A_hat[0, 1] = 0.
    adj = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    real = torch.ones(2)
    expected = torch.tensor([[1.0, 0.0], [1 / math.sqrt(2), 0.5]])
    torch.testing.assert_close(normalised_adjacency(adj, real), expected)

    # Padded to J = 3: the padding row and column are all zero.
    adj3 = torch.zeros(3, 3)
    adj3[0, 1] = 1.0
    padded = normalised_adjacency(adj3, torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(padded[:2, :2], expected)
    assert not padded[2].any() and not padded[:, 2].any()


def test_one_layer_by_hand() -> None:
    # With W = I and b = 0 one layer is A_hat H: node 0 keeps h0, node 1 gets
    # h0 / sqrt(2) + h1 / 2.
    enc = TaskEncoder(node_features=2, hidden=2)
    with torch.no_grad():
        enc.gcn1.lin.weight.copy_(torch.eye(2))
        enc.gcn1.bias.zero_()
    h = torch.tensor([[1.0, 4.0], [1.0, 8.0]])  # feature 0 = real
    adj = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    out = enc.gcn1(h, normalised_adjacency(adj, h[:, 0]))
    expected = torch.tensor([[1.0, 4.0], [1 / math.sqrt(2) + 0.5, 2 * math.sqrt(2) + 4.0]])
    torch.testing.assert_close(out, expected)


def test_padding_does_not_change_the_embedding() -> None:
    torch.manual_seed(0)
    f = 10
    enc = TaskEncoder(f)
    x = torch.rand(2, f)
    x[:, 0] = 1.0
    outs = []
    for j in (2, 3, 5):
        nodes, adj = torch.zeros(j, f), torch.zeros(j, j)
        nodes[:2], adj[0, 1] = x, 1.0
        outs.append(enc(nodes, adj))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(outs[2], outs[0], rtol=0, atol=1e-6)

    # Even non-zero features on padding nodes (feature 0 = 0) cannot leak in.
    nodes, adj = torch.rand(5, f), torch.zeros(5, 5)
    nodes[2:, 0] = 0.0
    nodes[:2], adj[0, 1] = x, 1.0
    torch.testing.assert_close(enc(nodes, adj), outs[0], rtol=0, atol=1e-6)


# -- against PyG -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_pyg_on_paper_observations(dtype: torch.dtype) -> None:
    pytest.importorskip("torch_geometric")
    torch.manual_seed(1)
    env, obs = paper_observations(range(12))
    _, _, nodes, adj = env.layout.split(obs.to(dtype))
    sizes = nodes[..., 0].sum(-1)
    assert len(obs) >= 64
    assert set(sizes.tolist()) == {4.0, 5.0}, "both 4- and 5-node tasks, padded to J = 5"
    assert nodes.shape[-2] == 5
    assert (nodes[..., -1] > 0).any(), "some observations have dispatched subtasks"

    dense = TaskEncoder(env.layout.node_features).to(dtype)
    with torch.no_grad():  # non-zero biases, so a bias in the wrong place shows
        for p in (dense.gcn1.bias, dense.gcn2.bias):
            p.uniform_(-0.5, 0.5)
    ref = PygEncoder(dense)

    got = dense(nodes, adj)
    want = ref(pyg_batch(nodes, adj))
    assert got.shape == want.shape == (len(obs), 16)
    atol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, want, rtol=0, atol=atol)

    # Gradients agree too (the encoder is trained end to end).
    got.square().sum().backward()
    ref(pyg_batch(nodes, adj)).square().sum().backward()
    pairs = [
        (dense.gcn1.lin.weight, ref.conv1.lin.weight),
        (dense.gcn1.bias, ref.conv1.bias),
        (dense.gcn2.lin.weight, ref.conv2.lin.weight),
        (dense.gcn2.bias, ref.conv2.bias),
        (dense.head.weight, ref.head.weight),
    ]
    for a, b in pairs:
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=100 * atol)


def test_matches_pyg_with_leading_batch_dims() -> None:
    pytest.importorskip("torch_geometric")
    torch.manual_seed(2)
    env, obs = paper_observations(range(4), steps=0)  # 4 joint observations of 5 agents
    _, _, nodes, adj = env.layout.split(obs.view(4, 5, -1))
    dense = TaskEncoder(env.layout.node_features)
    got = dense(nodes, adj)
    assert got.shape == (4, 5, 16)
    want = PygEncoder(dense)(pyg_batch(nodes.flatten(0, 1), adj.flatten(0, 1)))
    torch.testing.assert_close(got.flatten(0, 1), want, rtol=0, atol=1e-6)


# -- one encoder and actor per agent, stacked ----------------------------------------------


def test_agent_linear_is_one_nn_linear_per_agent() -> None:
    """Same draws as nn.Linear, agent after agent, and agent i's rows see only its weights."""
    torch.manual_seed(3)
    plain = [torch.nn.Linear(7, 3) for _ in range(4)]
    torch.manual_seed(3)
    stacked = AgentLinear(4, 7, 3)
    x = torch.randn(4, 2, 6, 7)
    for i, lin in enumerate(plain):
        assert torch.equal(stacked.weight[i], lin.weight.t())
        assert torch.equal(stacked.bias[i, 0], lin.bias)
        torch.testing.assert_close(stacked(x)[i], lin(x[i]), rtol=0, atol=1e-6)


def plain_actor(actors: Actors, i: int, obs: torch.Tensor) -> torch.Tensor:
    """Agent i's joint log-probabilities from its weights alone, in plain modules: the
    single-agent TaskEncoder (checked against PyG above) and ``F.linear``."""
    layout = actors.layout
    enc = TaskEncoder(layout.node_features)
    with torch.no_grad():
        stacked = dict(actors.encoder.named_parameters())
        for name, plain in enc.named_parameters():
            own = stacked[name][i]
            own = own.t() if name.endswith("weight") else own  # stored (in, out)
            plain.copy_(own.reshape(plain.shape))
    p, servers, nodes, adj = layout.split(obs)
    h = torch.cat([p, servers.flatten(-2), enc(nodes, adj)], -1)

    def linear(layer: AgentLinear, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, layer.weight[i].t(), layer.bias[i, 0])

    for layer in actors.body[::2]:  # Linear, ReLU, Linear, ReLU, Linear; ReLU after each
        h = torch.relu(linear(layer, h))
    sub = torch.log_softmax(linear(actors.subtask_head, h), -1)
    loc = torch.log_softmax(linear(actors.location_head, h), -1)
    return (sub.unsqueeze(-1) + loc.unsqueeze(-2)).flatten(-2)


def test_batched_actors_match_each_agent_alone() -> None:
    torch.manual_seed(4)
    env, obs = paper_observations(range(6), steps=2)
    obs = obs.view(-1, 5, env.layout.size)  # (B, I, O): joint observations of 5 agents
    actors = Actors(env.layout, 5, hidden=32)
    masks = (torch.rand(len(obs), 5, env.layout.actions) < 0.3).to(torch.int8)
    with torch.no_grad():
        batched = actors.log_pi(obs)
        masked = actors.log_pi(obs, masks)
        single = actors.log_pi(obs[0])
        for i in range(5):
            alone = plain_actor(actors, i, obs[:, i])
            torch.testing.assert_close(batched[:, i], alone, rtol=0, atol=1e-6)
            torch.testing.assert_close(actors.agent(i, obs[:, i]), alone, rtol=0, atol=1e-6)
            torch.testing.assert_close(single[i], alone[0], rtol=0, atol=1e-6)
            want = masked_log_softmax(alone, masks[:, i])
            torch.testing.assert_close(masked[:, i], want, rtol=0, atol=1e-6)
    assert batched.shape == (len(obs), 5, env.layout.actions)
    assert not torch.allclose(batched[:, 0], batched[:, 1])  # the agents' weights differ


def test_critic_in_parts_equals_the_concatenated_input() -> None:
    """The COMA critic's first layer, applied in parts, gives what it gives on EPyMARL's
    concatenated input [S, o_i, one-hot A^-i (own slot zeroed), id_i]."""
    torch.manual_seed(5)
    env, obs = paper_observations(range(8), steps=0)
    n, actions = 5, env.layout.actions
    state = obs.view(-1, n * env.layout.size)
    b = len(state)
    critic = Critic(env.layout, n, hidden=32)
    joint = torch.randint(-1, actions, (b, n))  # -1: inactive
    onehot = torch.nn.functional.one_hot(joint.clamp(min=0), actions) * (joint >= 0).unsqueeze(-1)
    others = onehot.unsqueeze(1).expand(b, n, n, actions) * (1 - torch.eye(n).view(1, n, n, 1))
    ids = torch.eye(n).expand(b, n, n)
    x = torch.cat(
        [state.unsqueeze(1).expand(b, n, -1), obs.view(b, n, -1), others.flatten(-2), ids], -1
    )
    with torch.no_grad():
        torch.testing.assert_close(critic(state, joint), critic.net(x), rtol=0, atol=1e-5)


def test_actors_draw_what_one_network_per_agent_drew() -> None:
    """Same seed, same weights as building each agent's layers in turn with nn.Linear."""
    torch.manual_seed(6)
    actors = Actors(OffloadEnv(load_scenario("paper")).layout, 3, hidden=32)
    layers = [m for m in actors.modules() if isinstance(m, AgentLinear)]
    torch.manual_seed(6)
    for i in range(3):
        for layer in layers:  # encoder (gcn1, gcn2, head), body, subtask head, location head
            plain = torch.nn.Linear(*layer.weight.shape[1:], bias=layer.bias is not None)
            assert torch.equal(layer.weight[i], plain.weight.t())
            assert layer.bias is None or torch.equal(layer.bias[i, 0], plain.bias)


@pytest.mark.parametrize("lead", [(1, 5), (64, 5), (3,)])
def test_sample_draws_what_multinomial_draws(lead: tuple[int, ...]) -> None:
    """Same generator seed, same actions as torch.multinomial(p, 1), draw after draw (so
    the generator advances alike), also where masked actions have probability 0."""
    source = torch.Generator().manual_seed(7)
    ours, torchs = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    for _ in range(200):
        logits = 3 * torch.randn(*lead, 20, generator=source)
        masks = torch.rand(*lead, 20, generator=source) < 0.6
        logp = masked_log_softmax(logits, masks.to(torch.int8))
        drawn = torch.multinomial(logp.exp().reshape(-1, 20), 1, generator=torchs)
        assert torch.equal(sample(logp, ours), drawn.reshape(lead))
