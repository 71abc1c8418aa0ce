"""Keep LoRA updates out of the directions general data uses: a null-space constraint on each adapter's input.

A LoRA layer adds `B @ A @ x` to a frozen layer's output. If every row of A is orthogonal to the inputs `x` that
general text produces in that layer, general inputs get (almost) no change and the adapter can only act on what
is different about domain inputs. This is the idea behind AlphaEdit (Fang et al. 2025, knowledge edits projected
onto the null space of preserved knowledge) and LoRA-Null (adapters built in the null space of pre-trained
activations), applied to LoRA SFT.

How: the frozen model reads the stage's general-role training examples once; for each adapted layer the
uncentered second moment `C = sum x x^T` of its inputs (non-pad tokens, each scaled to unit length) is decomposed,
and the null space is the span of the smallest-eigenvalue directions that together carry at most `1 - keep` of
the general energy (`keep: 0.99` leaves 1% of it within the adapter's reach). A is projected onto that space before
training and after every optimizer step (a projected optimizer: Adam's step is taken, then its component in general
directions is removed), so the saved adapter is an ordinary LoRA adapter.

Cost: one forward pass over the general examples, one symmetric eigendecomposition per distinct layer input
(q/k/v share theirs, as do gate/up), and per distinct input a basis of at most `d_in x d_in / 2` fp32 values kept
on the adapter's device (for a 7B model with all-linear adapters up to ~11 GB in all, and while they are computed one
`d_in x d_in` moment per distinct input: target fewer modules there). `domain_ratio` adds a forward pass over a
domain sample as large as the general data, a second moment per distinct input, and two more decompositions and a
QR per input. Under DDP each rank computes the bases and all take rank 0's (`main_process_spaces`). DeepSpeed and
FSDP, which keep their own copies of the adapter weights, are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RecipeError


@dataclass
class InputGroup:
    """Adapted modules that read one input, and the subspace their A matrices are kept in.

    `basis` holds orthonormal columns: the null space itself (`complement` False: A <- (A N) N^T) or, when that is
    the smaller of the two, the general directions to remove (`complement` True: A <- A - (A R) R^T). Either way
    each projection reads a `d_in x min(k, d_in - k)` matrix, not a dense projector.
    """

    modules: list[str]
    basis: object  # torch.Tensor [d_in, m]
    complement: bool
    null_dims: int

    def projector(self):
        """The dense `d_in x d_in` projector onto the null space (for inspection and tests)."""
        import torch

        outer = self.basis @ self.basis.T
        return torch.eye(outer.shape[0], dtype=outer.dtype, device=outer.device) - outer if self.complement else outer


@dataclass
class NullSpaces:
    groups: list[InputGroup] = field(default_factory=list)

    @property
    def dims(self) -> dict[str, tuple[int, int]]:
        """Module name -> (null dims, d_in)."""
        return {m: (g.null_dims, g.basis.shape[0]) for g in self.groups for m in g.modules}

    def group_of(self, module: str) -> InputGroup:
        return next(g for g in self.groups if module in g.modules)

    def summary(self, keep: float) -> dict:
        dims = self.dims
        fractions = [k / d for k, d in dims.values()]
        return {
            "keep": keep,
            "modules": len(dims),
            "input_groups": len(self.groups),
            "null_fraction_mean": round(sum(fractions) / len(fractions), 4),
            "null_fraction_min": round(min(fractions), 4),
            "dims": {name: list(v) for name, v in dims.items()},
        }


def lora_layers(model) -> dict[str, object]:
    """Name -> PEFT LoRA layer (the wrapper holding `lora_A`) for every adapted module."""
    return {name: m for name, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0}


def general_null_spaces(model, batches, keep: float, domain_batches=None) -> NullSpaces:
    """Null-space projectors of the general inputs of every LoRA layer of `model` (module docstring).

    `batches` yields dicts with `input_ids` and `attention_mask` (general examples only). The model runs in eval
    mode without gradients; with B initialised to zero the adapters do not change what it computes. With
    `domain_batches` (the domain examples, same form) each layer's subspace is chosen by `_domain_ratio_basis`
    instead of `_null_basis`: same general budget, the directions that carry the most domain input per unit of
    general input.
    """
    layers = lora_layers(model)
    if not layers:
        raise RecipeError("general_null_space: the model has no LoRA layers")
    moments, group_of, tokens = _layer_moments(model, layers, batches)
    if tokens == 0:
        raise RecipeError("general_null_space needs general-role training examples; the stage has none")
    domain_moments = None
    if domain_batches is not None:
        domain_moments, domain_groups, domain_tokens = _layer_moments(model, layers, domain_batches)
        if domain_tokens == 0:
            raise RecipeError("null_space_directions: domain_ratio needs domain-role training examples")
        # Groups are numbered in the order layers first see their input: the same order in both passes.
        assert domain_groups == group_of

    members: dict[int, list[str]] = {}
    for name in layers:
        members.setdefault(group_of[name], []).append(name)
    spaces = NullSpaces()
    for group, names in members.items():
        # Free each d x d moment as it goes.
        if domain_moments is None:
            basis, complement, null_dims = _null_basis(moments.pop(group), keep)
        else:
            basis, complement, null_dims = _domain_ratio_basis(moments.pop(group), domain_moments.pop(group), keep)
        weight = next(iter(layers[names[0]].lora_A.values())).weight
        spaces.groups.append(InputGroup(names, basis.to(weight.device), complement, null_dims))
    if all(g.null_dims == 0 for g in spaces.groups):
        raise RecipeError(
            f"general_null_space: {keep} leaves no direction free in any layer (the general inputs use every "
            "direction); lower it, e.g. 0.99"
        )
    return spaces


def domain_sample(rows: list[dict], tokens: int, seed: int) -> list[dict]:
    """Domain rows (`input_ids` lists) in a seeded random order until they hold `tokens` tokens (all of them if
    fewer). For `domain_ratio` the domain moment is estimated from about as many tokens as the general one: reading
    every domain example would be one more forward pass over the whole training set (and its `d_in x d_in` products
    cost more than the pass itself on a CPU)."""
    import random

    chosen, total = [], 0
    for i in random.Random(seed).sample(range(len(rows)), len(rows)):
        if total >= tokens:
            break
        chosen.append(rows[i])
        total += len(rows[i]["input_ids"])
    return chosen


def _layer_moments(model, layers: dict, batches):
    """(input group -> sum of unit-length token inputs' outer products, module name -> input group, tokens)."""
    import torch

    moments: dict[int, torch.Tensor] = {}
    group_of: dict[str, int] = {}
    # Modules fed the same tensor one after another (q/k/v, gate/up) share one moment. Holding the last input
    # keeps its id from being reused by a later tensor while it is compared.
    state: dict = {"mask": None, "last": (None, -1)}

    def hook(name):
        def pre_hook(module, args):
            x = args[0]
            last, last_group = state["last"]
            if x is last:
                group_of[name] = last_group
                return
            group = group_of.setdefault(name, len(moments))
            moment = token_moment(x[state["mask"]])
            if group in moments:
                moments[group].add_(moment)  # in place: one d x d per input, not two
            else:
                moments[group] = moment
            state["last"] = (x, group)

        return pre_hook

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    tokens = 0
    try:
        with torch.no_grad():
            for batch in batches:
                mask = batch["attention_mask"].bool()
                state["mask"], state["last"] = mask, (None, -1)
                # No KV cache and one position of logits: only the layer inputs are wanted.
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                      logits_to_keep=1)  # fmt: skip
                tokens += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        state["last"] = (None, -1)
    return moments, group_of, tokens


def token_moment(rows):
    """`sum x x^T` over token inputs `rows` [tokens, d_in], each scaled to unit length first.

    Every token counts once. With raw activations a few tokens with massive activations (the first token and
    delimiters; Sun et al. 2024) carry nearly all the energy of some layers: the 1% left over would then hold every
    direction the other tokens use, and the constraint would leave those layers free. (SmolLM2-135M: three MLP
    down-projections had 1535, 1525 and 1320 of 1536 input directions "free" that way.)
    """
    rows = rows.float()
    rows = rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    return rows.T @ rows


def _null_basis(moment, keep: float):
    """The smallest-eigenvalue directions of `moment` that carry at most `1 - keep` of its trace (the null space),
    as (basis, complement, null dims): the null space's basis, or its complement's when that is smaller."""
    import torch

    eigenvalues, vectors = torch.linalg.eigh(moment.double())  # ascending
    energy = eigenvalues.clamp(min=0)
    null = torch.cumsum(energy, 0) / energy.sum().clamp(min=1e-30) <= 1.0 - keep
    k = int(null.sum())
    complement = k > moment.shape[0] - k
    basis = vectors[:, ~null] if complement else vectors[:, null]
    return basis.float().contiguous(), complement, k


def _domain_ratio_basis(general, domain, keep: float):
    """The directions with the most domain input per unit of general input, as many as fit in `1 - keep` of the
    general energy, in `_null_basis`'s form.

    The generalized eigenvectors of (domain, general) moments, largest ratio first, are orthonormalized in that
    order: the first k columns span the first k eigenvectors, and their diagonal of the general moment adds up to
    the general energy that subspace holds. Any adapter row in it reads domain inputs at least the k-th ratio times
    as strongly as general ones. Lowest-general-energy directions (`_null_basis`) may carry little domain input
    too, and an adapter that must grow large to use them carries more of the general inputs along.
    """
    import torch

    general = general.double() / general.trace().clamp(min=1e-30)
    domain = domain.double() / domain.trace().clamp(min=1e-30)
    d = general.shape[0]
    # Whiten by the general moment, its eigenvalues floored at 1e-4 of their mean: float32 sums leave tiny negative
    # ones, and directions general inputs never use then get the largest ratios instead of a division by zero.
    energies, axes = torch.linalg.eigh(general)
    inv_sqrt = (axes * energies.clamp(min=1e-4 / d).rsqrt()) @ axes.T
    _, vectors = torch.linalg.eigh(inv_sqrt @ domain @ inv_sqrt)  # ascending ratios
    directions = (inv_sqrt @ vectors).flip(1)  # largest ratio first
    directions = directions / directions.norm(dim=0, keepdim=True)
    ordered, _ = torch.linalg.qr(directions)
    share = torch.cumsum(torch.einsum("ij,ik,kj->j", ordered, general, ordered), 0)
    k = int((share <= 1.0 - keep).sum())
    complement = k > d - k
    basis = ordered[:, k:] if complement else ordered[:, :k]
    return basis.float().contiguous(), complement, k


def main_process_spaces(spaces: NullSpaces) -> NullSpaces:
    """Rank 0's spaces on every rank (unchanged in one process).

    Every rank computes the bases from the same examples, but float reductions differ between devices, and a basis
    near a tie can even come out one dimension larger. DDP keeps replicas equal by averaging gradients, not weights:
    each rank projecting with its own basis after every step would let them drift apart.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return spaces
    layout = [[[g.modules, list(g.basis.shape), g.complement, g.null_dims] for g in spaces.groups]]
    dist.broadcast_object_list(layout, src=0)
    shared = NullSpaces()
    for (modules, shape, complement, null_dims), own in zip(layout[0], spaces.groups, strict=True):
        basis = own.basis.contiguous()
        if list(basis.shape) != shape:
            basis = torch.empty(shape, dtype=basis.dtype, device=basis.device)
        dist.broadcast(basis, src=0)
        shared.groups.append(InputGroup(modules, basis, complement, null_dims))
    return shared


def project_adapters(model, spaces: NullSpaces) -> None:
    """A <- A P for every LoRA layer: the adapter reads only the null space of its general inputs. The A matrices
    of one input group are projected together, so each basis is read once per call."""
    import torch

    layers = lora_layers(model)
    with torch.no_grad():
        for group in spaces.groups:
            weights = [a.weight for name in group.modules for a in layers[name].lora_A.values()]
            stacked = torch.cat([w.float() for w in weights])
            along = (stacked @ group.basis) @ group.basis.T
            projected = stacked - along if group.complement else along
            for w, rows in zip(weights, projected.split([w.shape[0] for w in weights]), strict=True):
                w.copy_(rows.to(w.dtype))


def null_space_callback(model, spaces: NullSpaces):
    """A Trainer callback that projects the adapters before training and after every optimizer step."""
    from transformers import TrainerCallback

    class ProjectAdapters(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            project_adapters(model, spaces)

        def on_optimizer_step(self, args, state, control, **kwargs):
            project_adapters(model, spaces)

    return ProjectAdapters()
