"""Gradient-norm balancing: TI's pseudo_grad_norm and GradNorm (Chen et al., ICML 2018; LibMTL's variant).

Both read per-task gradient norms at the shared trunk output inside the one backward (FeatureGradients).
Under torch.distributed the norms and losses are all-reduced to their pooled-batch values (losses: mean;
squared norms: sum / world^2, since each rank's loss is a mean over its share of the batch), so every rank
makes the same single update per step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FeatureGradients, TaskWeighting, all_reduce_mean, all_reduce_sum, world_size


def pooled_norms(per_task_gradients: Sequence[Tensor], scale: float) -> Tensor:
    """(T,) Frobenius norms of each task's gradient tensor, of the pooled batch under distributed."""
    squared = torch.stack([g.detach().double().pow(2).sum() for g in per_task_gradients])
    squared = all_reduce_sum(squared) / world_size() ** 2
    return (squared.sqrt() / scale).float()


class PseudoGradNorm(TaskWeighting):
    """TI's `pseudo_grad_norm` (ti_multitask.md §5.2), T in place of a hard-coded 3, one update per step.

    Per step: EMAs S (short) and Lambda (long) of the losses; backward of sum w_i L_i; G_i = ||d(w_i L_i)/dF||
    at the trunk output F, EMA-smoothed; r = S / (Lambda + eps), r_hat = r / sum r; target = mean(G) r_hat^a;
    w <- w + lr w (target / (G + eps) - 1); w <- T w / sum w. The new w is used from the next step on.
    """

    needs_features = True
    OPTIONS = {
        "alpha": (0.75, "pseudo_grad_norm: asymmetry alpha (TI 0.75); grad_norm: alpha (paper 1.5)"),
        "weight_lr": (1e-4, "pseudo_grad_norm: multiplicative step size of the weights (TI 1e-4)"),
        "short_smooth": (1e-3, "pseudo_grad_norm: short EMA rate of losses and gradient norms (TI 1e-3)"),
        "long_smooth": (1e-6, "pseudo_grad_norm: long EMA rate of the losses, ~L(0) (TI 1e-6)"),
    }
    EPS = 1e-6

    def __init__(
        self,
        *,
        tasks: Sequence[str],
        alpha: float = 0.75,
        weight_lr: float = 1e-4,
        short_smooth: float = 1e-3,
        long_smooth: float = 1e-6,
    ) -> None:
        super().__init__(tasks=tasks)
        self.alpha, self.weight_lr = float(alpha), float(weight_lr)
        self.short_smooth, self.long_smooth = float(short_smooth), float(long_smooth)
        t = self.num_tasks
        self.register_buffer("weights", torch.ones(t, dtype=torch.float64))
        self.register_buffer("short_loss", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("long_loss", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("smooth_norm", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _backward(
        self, losses: Tensor, *, task_losses: list[Tensor], features: tuple[Tensor, ...], scale: float
    ) -> Tensor:
        used = self.weights.clone()
        weighted = used.to(losses.dtype).to(losses.device) * losses
        # TI's F is the trunk output only (features[0]); the stride-4 skip is not part of its norms.
        grads = FeatureGradients(task_losses, features[:1])
        grads.run(self.scaled(weighted.sum(), scale))
        norms = pooled_norms([task[0] for task in grads.per_task], scale).double().to(self.weights.device)
        if not bool(torch.isfinite(norms).all()):
            # A float16 overflow: the GradScaler skips this step, and the EMAs must not take the inf.
            return used.float()
        self.update(losses=all_reduce_mean(losses.detach()).double().to(self.weights.device), norms=norms)
        return used.float()

    @torch.no_grad()
    def update(self, *, losses: Tensor, norms: Tensor) -> None:
        """One TI update from this step's (pooled) losses L_i and gradient norms G_i = ||d(w_i L_i)/dF||."""
        if int(self.steps) == 0:
            self.short_loss.copy_(losses)
            self.long_loss.copy_(losses)
            self.smooth_norm.copy_(norms)
        else:
            self.short_loss.mul_(1 - self.short_smooth).add_(self.short_smooth * losses)
            self.long_loss.mul_(1 - self.long_smooth).add_(self.long_smooth * losses)
            self.smooth_norm.mul_(1 - self.short_smooth).add_(self.short_smooth * norms)
        self.steps += 1
        rate = self.short_loss / (self.long_loss + self.EPS)
        rate = rate / rate.sum()
        target = self.smooth_norm.mean() * rate.pow(self.alpha)
        ratio = target / (self.smooth_norm + self.EPS)
        self.weights.add_(self.weight_lr * self.weights * (ratio - 1))
        self.weights.mul_(self.num_tasks / self.weights.sum())


class GradNorm(TaskWeighting):
    """GradNorm at the shared trunk output F (the paper's W is the last shared layer; F is its output).

    mode "paper": raw weights w (init 1) trained with the network's optimizer (lr `gradnorm_lr`, or the
    network's when unset; no weight decay) on L_grad = sum |G_i - mean(G) r_i^alpha| with
    G_i = ||w_i dL_i/dF||, r_i = (L_i/L_i(0)) / mean; L(0) = the first step's losses; w renormalised to
    sum w = T before every use; the network gets the gradient of sum w_i L_i (heads included).
    mode "libmtl": LibMTL 1.1.5 GradNorm with rep_grad (mtl_weighting.md §2.3): w = T softmax(s), s init 1
    in the network's optimizer (its lr and weight decay); equal weights in epoch 0; L(0) = epoch 0's mean
    loss; G_i over the batch-summed feature gradient; heads get unweighted grad L_i, the trunk sum w_i g_i.
    """

    needs_features = True
    MIN_WEIGHT = 1e-6  # the paper's descent could push a weight to <= 0; keep it positive
    OPTIONS = {
        "alpha": (1.5, "grad_norm: asymmetry alpha (paper 1.5)"),
        "gradnorm_mode": ("paper", "grad_norm: paper | libmtl (LibMTL 1.1.5 conventions, bit-exact)"),
        "gradnorm_lr": (None, "grad_norm (paper): learning rate of the weights; default the network's"),
    }

    def __init__(
        self,
        *,
        tasks: Sequence[str],
        alpha: float = 1.5,
        gradnorm_mode: str = "paper",
        gradnorm_lr: float | None = None,
    ) -> None:
        super().__init__(tasks=tasks)
        if gradnorm_mode not in ("paper", "libmtl"):
            raise ValueError(f"gradnorm_mode: expected paper or libmtl, got {gradnorm_mode!r}")
        self.alpha, self.mode, self.lr = float(alpha), gradnorm_mode, gradnorm_lr
        t = self.num_tasks
        # paper: the raw weights; libmtl: the logits s of w = T softmax(s).
        self.loss_scale = nn.Parameter(torch.ones(t))
        self.register_buffer("initial_losses", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("has_initial_losses", torch.zeros((), dtype=torch.bool))

    def current_weights(self) -> Tensor:
        if self.mode == "libmtl":
            return self.num_tasks * F.softmax(self.loss_scale, dim=-1)
        return self.loss_scale

    def _backward(
        self, losses: Tensor, *, task_losses: list[Tensor], features: tuple[Tensor, ...], scale: float
    ) -> Tensor:
        if self.mode == "libmtl":
            return self._backward_libmtl(losses, task_losses, features, scale)
        with torch.no_grad():  # renormalising after the optimizer step is the same as before this use
            self.loss_scale.clamp_(min=self.MIN_WEIGHT)
            self.loss_scale.mul_(self.num_tasks / self.loss_scale.sum())
        pooled = all_reduce_mean(losses.detach()).double()
        if not bool(self.has_initial_losses):
            self.initial_losses.copy_(pooled)
            self.has_initial_losses.fill_(True)
        used = self.loss_scale.detach().clone()
        grads = FeatureGradients(task_losses, features[:1])
        grads.run(self.scaled((used * losses).sum(), scale))
        # per_task holds w_i dL_i/dF, so ||.|| is G_i and G_i / w_i the unweighted norm.
        norms = pooled_norms([task[0] for task in grads.per_task], scale).to(used.device)
        ratio = (pooled / self.initial_losses).float().to(used.device)
        target = (norms.mean() * (ratio / ratio.mean()).pow(self.alpha)).detach()
        # d/dw_i sum_j |w_j n_j - target_j| = sign(G_i - target_i) n_i (target held constant, as the paper).
        # Times the AMP scale, as autograd's gradients of the network: GradScaler.unscale_ divides all alike.
        grad = torch.sign(norms - target) * norms / used * scale
        self.loss_scale.grad = grad if self.loss_scale.grad is None else self.loss_scale.grad + grad
        return used

    def _backward_libmtl(
        self, losses: Tensor, task_losses: list[Tensor], features: tuple[Tensor, ...], scale: float
    ) -> Tensor:
        if not bool(self.has_initial_losses):  # LibMTL's epoch 0: equal weighting
            self.scaled(losses.sum(), scale).backward()
            return torch.ones(self.num_tasks)
        loss_scale = self.num_tasks * F.softmax(self.loss_scale, dim=-1)
        loss_weight = loss_scale.detach().clone()

        def combine(grads: FeatureGradients) -> list[Tensor]:
            # LibMTL's rep_grad: per-task feature gradients summed over the batch; here every feature
            # (trunk output and skip) is part of the representation.
            per_feature = [torch.stack([task[f] for task in grads.per_task]) for f in range(len(features))]
            summed = torch.cat(
                [p.float().reshape(self.num_tasks, p.shape[1], -1).sum(1) for p in per_feature], dim=1
            )
            summed = all_reduce_mean(summed / scale)
            pooled = all_reduce_mean(losses.detach())
            with torch.enable_grad():  # autograd runs this hook in no-grad mode
                g_per_loss = torch.norm(loss_scale.unsqueeze(1) * summed, p=2, dim=-1)
                g = g_per_loss.mean(0)
                l_i = torch.Tensor(
                    [pooled[i].item() / float(self.initial_losses[i]) for i in range(self.num_tasks)]
                ).to(summed.device)
                r_i = l_i / l_i.mean()
                constant_term = (g * (r_i**self.alpha)).detach()
                l_grad = (g_per_loss - constant_term).abs().sum(0)
                (grad,) = torch.autograd.grad(l_grad, self.loss_scale)
            grad = grad * scale  # in the scaled space of the network's gradients (GradScaler.unscale_)
            self.loss_scale.grad = grad if self.loss_scale.grad is None else self.loss_scale.grad + grad
            return [torch.einsum("i, i... -> ...", loss_weight, p.to(loss_weight.dtype)) for p in per_feature]

        FeatureGradients(task_losses, features, replace=combine).run(self.scaled(losses.sum(), scale))
        return loss_weight

    def end_epoch(self, *, mean_losses: Mapping[str, float]) -> None:
        if self.mode != "libmtl" or bool(self.has_initial_losses):
            return
        if set(mean_losses) != set(self.tasks):
            raise ValueError(f"mean_losses: expected keys {list(self.tasks)}, got {list(mean_losses)}")
        self.initial_losses.copy_(
            torch.tensor([float(mean_losses[t]) for t in self.tasks], dtype=torch.float64)
        )
        self.has_initial_losses.fill_(True)

    def optimizer_param_groups(self) -> list[dict]:
        if self.mode == "libmtl":
            return [{"params": [self.loss_scale]}]  # LibMTL: the model's optimizer, lr and weight decay
        group: dict = {"params": [self.loss_scale], "weight_decay": 0.0}
        if self.lr is not None:
            group["lr"] = self.lr
        return [group]
