"""The action-value network Q(s, .), the Q-learning targets it is fitted to, and the gradient step that fits it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import gymnasium
import numpy as np
import torch
from torch import nn

from dqn.migrations import WEIGHTS_VERSION, migrate_weights

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}
# The same functions in numpy, for `greedy_action`'s fast path (numpy has no erf, so no gelu).
NUMPY_ACTIVATIONS = {
    nn.ReLU: lambda x: np.maximum(x, 0),
    nn.Tanh: np.tanh,
    nn.ELU: lambda x: np.where(x > 0, x, np.expm1(x)),
}
EXERCISE_LAYOUT = {
    "hidden_sizes": (256, 256),
    "activation": "relu",
    "dueling": False,
    "layer_norm": False,
    "lr": 6.3e-4,
    "adam_eps": 1e-8,
    "loss": "huber",
    "max_grad_norm": 10.0,
}
"""What `ActionValueEstimator(env)` builds: the exercise's plain network and optimizer. Training builds
the one its config describes (`dqn.state.build_estimator`)."""


class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) - mean_a A(s, a) (Wang et al. 2016): the state's value is learnt
    from every action's sample, not only from the action taken."""

    def __init__(self, n_inputs: int, n_actions: int) -> None:
        super().__init__()
        self.value, self.advantage = nn.Linear(n_inputs, 1), nn.Linear(n_inputs, n_actions)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=-1, keepdim=True)


def mlp(
    n_inputs: int,
    n_outputs: int,
    hidden_sizes: Sequence[int],
    activation: str,
    dueling: bool = False,
    layer_norm: bool = False,
) -> nn.Sequential:
    """Linear -> (LayerNorm ->) activation for each hidden size, then a linear head (or a dueling one)."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(n_inputs, size), *([nn.LayerNorm(size)] if layer_norm else []), ACTIVATIONS[activation]()]
        n_inputs = size
    layers.append(DuelingHead(n_inputs, n_outputs) if dueling else nn.Linear(n_inputs, n_outputs))
    return nn.Sequential(*layers)


def numpy_layer(module: nn.Module) -> Callable[[np.ndarray], np.ndarray] | None:
    """`module` applied to one observation in numpy, over views of its parameters' own memory (which
    the optimizer and `load_state_dict` update in place); None where numpy has no such function."""
    if isinstance(module, nn.Linear):
        weight, bias = module.weight.detach().numpy(), module.bias.detach().numpy()
        return lambda x: weight @ x + bias
    if isinstance(module, nn.LayerNorm):
        gain, shift, eps = module.weight.detach().numpy(), module.bias.detach().numpy(), module.eps

        def normalise(x: np.ndarray) -> np.ndarray:  # sum and dot: numpy's mean and var dominate on 128 floats
            centred = x - x.sum() / x.size
            return centred * (gain / np.sqrt(centred @ centred / x.size + eps)) + shift

        return normalise
    if isinstance(module, DuelingHead):  # argmax_a Q = argmax_a A: V(s) and the mean of A shift every action alike
        return numpy_layer(module.advantage)
    return NUMPY_ACTIVATIONS.get(type(module))


class ActionValueEstimator:
    """Q(s, a) for a Box observation space and a Discrete action space.

    `predict` and `train` take and return numpy (one observation or a batch), the
    vocabulary of the exercise; torch stays inside. On CPU the conversions are
    zero-copy views, so the training loop pays nothing for them. The constructor's defaults
    are EXERCISE_LAYOUT; training passes its config's.
    """

    def __init__(
        self,
        env: gymnasium.Env,
        hidden_sizes: Sequence[int] = EXERCISE_LAYOUT["hidden_sizes"],
        activation: str = EXERCISE_LAYOUT["activation"],
        dueling: bool = EXERCISE_LAYOUT["dueling"],
        layer_norm: bool = EXERCISE_LAYOUT["layer_norm"],
        lr: float = EXERCISE_LAYOUT["lr"],
        adam_eps: float = EXERCISE_LAYOUT["adam_eps"],
        weight_decay: float = 0.0,
        loss: str = EXERCISE_LAYOUT["loss"],
        max_grad_norm: float | None = EXERCISE_LAYOUT["max_grad_norm"],
        device: str = "cpu",
    ) -> None:
        self.n_inputs = int(np.prod(env.observation_space.shape))
        self.n_actions = int(env.action_space.n)
        self.lr, self.adam_eps, self.loss_name, self.max_grad_norm = lr, adam_eps, loss, max_grad_norm
        self.weight_decay = weight_decay
        self.device = torch.device(device)
        self._build(list(hidden_sizes), activation, dueling, layer_norm)

    def _build(self, hidden_sizes: list[int], activation: str, dueling: bool, layer_norm: bool) -> None:
        self.hidden_sizes, self.activation = hidden_sizes, activation
        self.dueling, self.layer_norm = dueling, layer_norm
        self.network = mlp(self.n_inputs, self.n_actions, hidden_sizes, activation, dueling, layer_norm).to(self.device)
        # The fused kernel makes Adam's step ~3x cheaper on CPU; it exists for CPU and CUDA. Plain Adam
        # without decay, so checkpoints of runs without it keep loading into the optimizer they came from.
        parameters, options = self.network.parameters(), {"lr": self.lr, "eps": self.adam_eps, "fused": True}
        if self.weight_decay:
            self.optimizer = torch.optim.AdamW(parameters, weight_decay=self.weight_decay, **options)
        else:
            self.optimizer = torch.optim.Adam(parameters, **options)
        self.loss_fn = nn.SmoothL1Loss() if self.loss_name == "huber" else nn.MSELoss()
        self._index_parameters()

    def _index_parameters(self) -> None:
        """What the hot paths read instead of walking the network each call: the parameter list
        (listing it anew is a measurable share of an update) and the network as numpy functions for
        `greedy_action` (None where numpy cannot stand in for torch: a GPU, an activation numpy lacks)."""
        self._parameters = list(self.network.parameters())
        layers = [numpy_layer(m) for m in self.network] if self.device.type == "cpu" else [None]
        self._numpy_layers = None if any(layer is None for layer in layers) else layers

    def __getstate__(self) -> dict:
        """A copy (deepcopy, pickle) must not carry views of the original's parameters: it indexes its own."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_parameters", "_numpy_layers")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._index_parameters()

    def _tensor(self, array) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32, device=self.device)

    def q_values(self, observations) -> torch.Tensor:
        """Action values as a tensor, without gradient: shape (B, n_actions) or (n_actions,)."""
        with torch.no_grad():
            return self.network(self._tensor(observations))

    def predict(self, observations) -> np.ndarray:
        """Action values as numpy: (n_actions,) for one observation, (B, n_actions) for a batch."""
        return self.q_values(observations).cpu().numpy()

    def greedy_action(self, observation) -> int:
        """argmax_a Q(observation, a) for a single observation: the per-step hot path.

        On CPU the forward pass runs in numpy over views of the parameters: for one 8-float
        input torch's per-operation dispatch costs far more than the arithmetic, numpy's much less,
        so this is several times cheaper (same weights; the sums may round differently in the last bit).
        """
        if self._numpy_layers is None:
            with torch.inference_mode():
                return int(self.network(self._tensor(observation)).argmax())
        x = np.asarray(observation, dtype=np.float32)
        with np.errstate(all="ignore"):  # like torch: diverged weights give inf/nan, not warnings
            for layer in self._numpy_layers:
                x = layer(x)
        return int(x.argmax())

    def train(self, observations, actions, target_values) -> float:
        """One gradient step pulling Q(observations, actions) toward target_values; returns the loss."""
        actions = torch.as_tensor(actions, device=self.device).long().reshape(-1, 1)
        predicted = self.network(self._tensor(observations)).gather(1, actions)
        loss = self.loss_fn(predicted, self._tensor(target_values).reshape(-1, 1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self._parameters, self.max_grad_norm)
        self.optimizer.step()
        return loss.item()

    def set_learning_rate(self, lr: float) -> None:
        """Change the optimizer's step size (for annealing); Adam's moment estimates are kept."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def copy(self) -> ActionValueEstimator:
        """An independent copy (the target network starts as one)."""
        return copy.deepcopy(self)

    def sync_from(self, other: ActionValueEstimator, tau: float = 1.0) -> None:
        """Move these weights toward `other`'s: w <- (1 - tau) w + tau w_other (the target-network
        update); tau=1 copies them, a small tau is Polyak averaging, which damps the targets' jumps."""
        with torch.no_grad():
            for mine, theirs in zip(self.network.parameters(), other.network.parameters(), strict=True):
                mine.lerp_(theirs, tau)

    def save_weights(self, path: str | Path) -> None:
        """Weights plus the architecture, so a default-constructed estimator can load them."""
        torch.save(
            {
                "format_version": WEIGHTS_VERSION,
                "state_dict": self.network.state_dict(),
                "hidden_sizes": self.hidden_sizes,
                "activation": self.activation,
                "dueling": self.dueling,
                "layer_norm": self.layer_norm,
            },
            path,
        )

    def load_weights(self, path: str | Path) -> None:
        """Load weights saved by `save_weights`, rebuilding the network if its shape differs."""
        saved = migrate_weights(torch.load(path, map_location=self.device, weights_only=True))
        architecture = (list(saved["hidden_sizes"]), saved["activation"], saved["dueling"], saved["layer_norm"])
        if architecture != (self.hidden_sizes, self.activation, self.dueling, self.layer_norm):
            self._build(*architecture)
        self.network.load_state_dict(saved["state_dict"])


def compute_target_values(
    estimator: ActionValueEstimator,
    rewards: np.ndarray,
    next_observations: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    online: ActionValueEstimator | None = None,
) -> np.ndarray:
    """Q-learning targets r + gamma * max_a Q(s', a) * (1 - done), shape (B, 1).

    `estimator` rates the next state (pass the target network). With `online` given,
    the online network picks the next action instead (Double DQN), which removes the
    max operator's overestimation bias. `dones` must be terminations, not truncations.
    """
    next_q = estimator.q_values(next_observations)
    if online is None:
        max_next_q = next_q.max(dim=1, keepdim=True).values
    else:
        best = online.q_values(next_observations).argmax(dim=1, keepdim=True)
        max_next_q = next_q.gather(1, best)
    max_next_q = max_next_q.cpu().numpy()
    return np.reshape(rewards, (-1, 1)) + gamma * max_next_q * (1 - np.reshape(dones, (-1, 1)))
