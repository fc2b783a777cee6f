"""One converter per publisher: a loaded checkpoint -> the backbone's weights under a canonical layout.

The canonical layout is the publisher-neutral one both ecosystems share: torchvision's ResNet names (`conv1.*`,
`bn1.*`, `layer1.*`..`layer4.*`, and DISSL's widening under `avgpool.0.*`, as its torch.hub models name it) or
timm's ViT names (`cls_token`, `pos_embed`, `patch_embed.*`, `blocks.N.*`, `norm.*`). `sslbench.checkpoints.layout`
maps it onto sslbench's own backbone and checks it key by key.

A converter finds the backbone in the publisher's container (full training checkpoint, Lightning checkpoint, hub
file...), strips the container's prefixes and drops, by name, what is not the backbone (projectors, heads,
momentum/teacher branches, queues, classifiers). Prefixes are removed only from the start of a key (`startswith`
then slicing): a key such as `momentum_backbone.conv1.weight` is never turned into `momentum_conv1.weight`. Whatever
a converter keeps goes through the strict key check, so an unknown key is reported, never silently loaded or lost.

`FORMATS` maps each format name to its `Format`; the facts behind each one (key names, prefixes, containers) come
from the publisher's repository named in `Format.repository`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

Tensor = torch.Tensor


class LayoutError(Exception):
    """The loaded object does not have the layout a format expects (the caller adds the file name)."""


@dataclass
class Extracted:
    """The backbone's tensors under the canonical layout, and what the converter left out.

    Attributes:
        state: canonical name -> tensor.
        dropped: what was left out, as `component -> number of tensors` (e.g. `{"head": 8, "fc": 2}`).
        source: where the backbone was found, in words (e.g. "teacher of a full training checkpoint").
    """

    state: dict[str, Tensor]
    dropped: dict[str, int] = field(default_factory=dict)
    source: str = ""


Converter = Callable[[Any, str], Extracted]


@dataclass(frozen=True)
class Format:
    """A checkpoint source.

    Attributes:
        name: the format name users pass.
        publisher: who releases such files.
        repository: the publisher's repository whose code defines the layout.
        convert: `(loaded object, branch) -> Extracted`.
        branches: the networks a file of this format may hold, the default first (e.g. DINO's teacher, student).
        cifar_stem: the sslbench stem a 3x3 `conv1` means in this source (padding and max-pool as it defines them).
        container: the container layouts accepted, in words (for docs).
    """

    name: str
    publisher: str
    repository: str
    convert: Converter
    branches: tuple[str, ...] = ("backbone",)
    cifar_stem: str = "cifar"
    container: str = ""


# ----------------------------------------------------------------------------------------------- helpers


def strip_prefix(key: str, prefix: str) -> str | None:
    """`key` without `prefix` when it starts with it, else None (never a replacement inside the key)."""
    return key[len(prefix):] if key.startswith(prefix) else None


def _component(key: str) -> str:
    return key.split(".", 1)[0]


def _count(dropped: dict[str, int], name: str, n: int = 1) -> None:
    dropped[name] = dropped.get(name, 0) + n


def state_dict_of(obj: Any, where: str) -> dict[str, Tensor]:
    """`obj` as a flat state_dict (str -> tensor), or LayoutError saying what `where` holds instead."""
    if not isinstance(obj, Mapping):
        raise LayoutError(f"{where} is a {type(obj).__name__}, not a state_dict")
    if not obj:
        raise LayoutError(f"{where} is an empty dict")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            shown = ", ".join(f"{k!r}" for k in list(obj)[:6])
            hint = guess_format(obj)
            raise LayoutError(
                f"{where} is not a flat state_dict ({key!r} holds a {type(value).__name__}; keys: {shown}"
                f"{', ...' if len(obj) > 6 else ''})" + (f"; it looks like a `{hint}` file" if hint else "")
            )
    return dict(obj)


def unwrap_module(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip DistributedDataParallel's `module.` from the keys that start with it."""
    out = {}
    for key, value in state.items():
        stripped = strip_prefix(key, "module.")
        out[key if stripped is None else stripped] = value
    return out


def select_prefix(state: Mapping[str, Tensor], prefix: str, dropped: dict[str, int]) -> dict[str, Tensor]:
    """The keys under `prefix`, stripped; every other key is dropped and counted under its first component.

    When no key starts with `prefix` the state is taken to be the backbone already (a file saved from it), whole.
    """
    if not any(key.startswith(prefix) for key in state):
        return dict(state)
    out = {}
    for key, value in state.items():
        stripped = strip_prefix(key, prefix)
        if stripped is None:
            _count(dropped, _component(key))
        else:
            out[stripped] = value
    return out


def drop(state: Mapping[str, Tensor], names: tuple[str, ...], dropped: dict[str, int]) -> dict[str, Tensor]:
    """`state` without the keys named in `names`: an entry ending in "." drops a module's keys, else one key."""
    out = {}
    for key, value in state.items():
        hit = next((n for n in names if (key.startswith(n) if n.endswith(".") else key == n)), None)
        if hit is None:
            out[key] = value
        else:
            _count(dropped, hit.rstrip("."))
    return out


def _pick(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        keys = ", ".join(repr(k) for k in list(obj)[:8]) if isinstance(obj, Mapping) else type(obj).__name__
        raise LayoutError(f"{where} has no {key!r} (it holds {keys})")
    return obj[key]


def _no_branch(branch: str, fmt: str) -> None:
    if branch != "backbone":
        raise LayoutError(f"format {fmt!r} holds a single network; drop branch={branch!r}")


# ----------------------------------------------------------------------------------------------- converters


def _flat(obj: Any, branch: str, fmt: str, classifier: tuple[str, ...] = ("fc.",)) -> Extracted:
    _no_branch(branch, fmt)
    dropped: dict[str, int] = {}
    state = drop(state_dict_of(obj, "the file"), classifier, dropped)
    return Extracted(state, dropped, "flat state_dict")


def torchvision(obj: Any, branch: str) -> Extracted:
    """A flat torchvision ResNet state_dict (`torch.save(model.state_dict())`); the classifier `fc.*` is dropped,
    since an encoder ends at the pooled features. Also reads sslbench's own exports (DISSL widening included)."""
    return _flat(obj, branch, "torchvision")


def timm(obj: Any, branch: str) -> Extracted:
    """A flat timm state_dict: ResNet (torchvision's names, classifier `fc.*` dropped) or ViT-S (classifier `head.*`
    dropped); `.safetensors` files from the Hugging Face hub are read too."""
    return _flat(obj, branch, "timm", classifier=("fc.", "head."))


def dissl(obj: Any, branch: str) -> Extracted:
    """DISSL's torch.hub files: a flat torchvision ResNet-50 state_dict without `fc`; the `d8192` models add 18 keys
    of the residual expanding bottleneck under `avgpool.0.` (`conv1..3`, `bn1..3`), the `d2048` ones none."""
    return _flat(obj, branch, "dissl")


def dino(obj: Any, branch: str) -> Extracted:
    """DINO: a backbone file (flat, as released for torch.hub) or a full training checkpoint
    `{student, teacher, optimizer, epoch, args, dino_loss[, fp16_scaler]}`, whose networks are a multi-crop
    wrapper: `backbone.*` + `head.*`, under DDP's `module.` for the student and for a ResNet teacher."""
    dropped: dict[str, int] = {}
    if isinstance(obj, Mapping) and ("teacher" in obj or "student" in obj):
        where = f"the {branch!r} network of the DINO checkpoint"
        state = unwrap_module(state_dict_of(_pick(obj, branch, "the DINO checkpoint"), where))
        other = "student" if branch == "teacher" else "teacher"
        if other in obj:
            _count(dropped, other, len(obj[other]) if isinstance(obj[other], Mapping) else 0)
        return Extracted(select_prefix(state, "backbone.", dropped), dropped, f"{branch} of a full training checkpoint")
    if branch != "teacher":
        raise LayoutError("a DINO backbone file holds one network (the teacher); branch='student' needs the full "
                          "training checkpoint (checkpoint.pth)")
    state = unwrap_module(state_dict_of(obj, "the file"))
    state = select_prefix(state, "backbone.", dropped)
    return Extracted(drop(state, ("head.",), dropped), dropped, "backbone file")


def _model_backbone(obj: Any, branch: str, fmt: str, container_key: str) -> Extracted:
    """A hub file (flat backbone) or a full checkpoint `{epoch, <container_key>, optimizer}` with DDP's
    `module.backbone.*` beside the other modules of the training model."""
    _no_branch(branch, fmt)
    dropped: dict[str, int] = {}
    if isinstance(obj, Mapping) and container_key in obj and not isinstance(obj[container_key], Tensor):
        state = unwrap_module(state_dict_of(obj[container_key], f"the checkpoint's {container_key!r}"))
        state = select_prefix(state, "backbone.", dropped)
        return Extracted(state, dropped, "full training checkpoint")
    state = unwrap_module(state_dict_of(obj, "the file"))
    return Extracted(select_prefix(state, "backbone.", dropped), dropped, "hub file")


def barlow_twins(obj: Any, branch: str) -> Extracted:
    """Barlow Twins: `resnet50.pth` (flat torchvision backbone, no `fc`) or `checkpoint.pth` `{epoch, model,
    optimizer}` with `module.backbone.*`, `module.projector.*` and the loss's `module.bn.*` (the last two dropped)."""
    return _model_backbone(obj, branch, "barlow_twins", "model")


def vicreg(obj: Any, branch: str) -> Extracted:
    """VICReg: `resnet50.pth` (flat; its ResNet pads by 1 then convolves with padding 2, which equals torchvision's
    padding 3, under torchvision's names) or `model.pth` `{epoch, model, optimizer}` with `module.backbone.*` and
    `module.projector.*` (dropped)."""
    return _model_backbone(obj, branch, "vicreg", "model")


def swav(obj: Any, branch: str) -> Extracted:
    """SwAV: the released `*_pretrain.pth.tar` (a flat DDP state_dict, `module.` on every key) or the training
    checkpoint `{epoch, state_dict, optimizer[, amp]}`; `projection_head.*` and `prototypes.*` are dropped."""
    _no_branch(branch, "swav")
    dropped: dict[str, int] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj and not isinstance(obj["state_dict"], Tensor):
        obj, source = obj["state_dict"], "training checkpoint"
    else:
        source = "released pretrain file"
    state = unwrap_module(state_dict_of(obj, "the SwAV state_dict"))
    return Extracted(drop(state, ("projection_head.", "prototypes."), dropped), dropped, source)


def moco(obj: Any, branch: str) -> Extracted:
    """MoCo v1/v2: `{epoch, arch, state_dict, optimizer}` whose state_dict holds the query encoder
    `module.encoder_q.*` (kept, its `fc*` projection dropped), the key encoder `module.encoder_k.*` and the queue
    (dropped)."""
    _no_branch(branch, "moco")
    dropped: dict[str, int] = {}
    state = unwrap_module(state_dict_of(_pick(obj, "state_dict", "the MoCo checkpoint"), "its 'state_dict'"))
    if not any(k.startswith("encoder_q.") for k in state):
        raise LayoutError("the MoCo state_dict has no `module.encoder_q.` keys (the query encoder)")
    state = select_prefix(state, "encoder_q.", dropped)
    return Extracted(drop(state, ("fc.",), dropped), dropped, "query encoder")


def mmselfsup(obj: Any, branch: str) -> Extracted:
    """OpenMMLab mmselfsup 1.x / mmpretrain: `{meta, state_dict[, message_hub, optimizer, param_schedulers]}` with
    `backbone.*` (kept; torchvision's ResNet names) beside `neck.*`, `head.*`, `target_net.*`,
    `momentum_encoder.*`, `data_preprocessor.*`... (dropped); linear-eval files hold `backbone.*` + `head.fc.*`;
    mmselfsup 0.x extracted files `{state_dict, author}` hold the backbone without prefix."""
    _no_branch(branch, "mmselfsup")
    dropped: dict[str, int] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj and not isinstance(obj["state_dict"], Tensor):
        obj = obj["state_dict"]
    state = unwrap_module(state_dict_of(obj, "the OpenMMLab state_dict"))
    return Extracted(select_prefix(state, "backbone.", dropped), dropped, "OpenMMLab checkpoint")


def _lightning_state(obj: Any, fmt: str) -> dict[str, Tensor]:
    return state_dict_of(_pick(obj, "state_dict", f"the {fmt} Lightning checkpoint"), "its 'state_dict'")


def solo_learn(obj: Any, branch: str) -> Extracted:
    """solo-learn: a Lightning checkpoint whose `state_dict` holds `backbone.*` (older releases: `encoder.*`) beside
    `projector.*`, `predictor.*`, `classifier.*` and the momentum branch `momentum_*` (all dropped). Its CIFAR stem
    is a 3x3 stride-1 conv with padding 2 and no max-pool (`cifar_pad2`)."""
    _no_branch(branch, "solo_learn")
    dropped: dict[str, int] = {}
    state = _lightning_state(obj, "solo-learn")
    prefix = "backbone." if any(k.startswith("backbone.") for k in state) else "encoder."
    if not any(k.startswith(prefix) for k in state):
        raise LayoutError("the solo-learn state_dict has neither `backbone.` nor `encoder.` keys")
    return Extracted(select_prefix(state, prefix, dropped), dropped, "Lightning checkpoint")


_SEQUENTIAL_RESNET = (("0.", "conv1."), ("1.", "bn1."), ("4.", "layer1."), ("5.", "layer2."), ("6.", "layer3."),
                      ("7.", "layer4."))


def _from_children(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`nn.Sequential(*list(resnet.children())[:-1])` numbering -> torchvision names (children 2, 3 and 8 are the
    ReLU, the max-pool and the average pool, which hold no tensors)."""
    out = {}
    for key, value in state.items():
        for old, new in _SEQUENTIAL_RESNET:
            rest = strip_prefix(key, old)
            if rest is not None:
                out[new + rest] = value
                break
        else:
            out[key] = value
    return out


def lightly(obj: Any, branch: str) -> Extracted:
    """lightly: a Lightning checkpoint of its benchmarks (`state_dict` with the evaluated network under
    `backbone.*`, a torchvision ResNet; `teacher_backbone`, `student_backbone`, `key_backbone`,
    `backbone_momentum`, heads and `online_classifier` dropped), or the tutorials' `{"<name>_parameters":
    Sequential(*children[:-1]).state_dict()}`. Backbones built from lightly's own `ResNetGenerator` (its CIFAR-10
    benchmark) are another architecture and are refused."""
    _no_branch(branch, "lightly")
    dropped: dict[str, int] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj:
        state = select_prefix(_lightning_state(obj, "lightly"), "backbone.", dropped)
        source = "Lightning checkpoint"
    elif isinstance(obj, Mapping) and len(obj) == 1 and str(next(iter(obj))).endswith("_parameters"):
        key = next(iter(obj))
        state, source = state_dict_of(obj[key], f"the file's {key!r}"), f"tutorial file ({key!r})"
    else:
        state, source = state_dict_of(obj, "the file"), "flat state_dict"
    if any(".shortcut." in k for k in state):
        raise LayoutError("the backbone is lightly's ResNetGenerator (blocks with `shortcut`, no ReLU after the stem "
                          "in its Sequential), not a torchvision ResNet; sslbench cannot rebuild it")
    if "0.weight" in state:
        state = _from_children(state)
    return Extracted(state, dropped, source)


def vissl(obj: Any, branch: str) -> Extracted:
    """VISSL: `{classy_state_dict: {base_model: {model: {trunk, heads}, meta}}, phase_idx, iteration, loss, ...}`
    (also `{model_state_dict: trunk}` or a flat trunk); trunk keys carry `_feature_blocks.` (stripped), the heads
    are dropped."""
    _no_branch(branch, "vissl")
    dropped: dict[str, int] = {}
    if isinstance(obj, Mapping) and "classy_state_dict" in obj:
        model = _pick(_pick(_pick(obj, "classy_state_dict", "the VISSL checkpoint"), "base_model",
                            "its 'classy_state_dict'"), "model", "its 'base_model'")
        heads = model.get("heads", {}) if isinstance(model, Mapping) else {}
        if isinstance(heads, Mapping) and heads:
            _count(dropped, "heads", len(heads))
        trunk, source = _pick(model, "trunk", "its 'model'"), "classy_state_dict trunk"
    elif isinstance(obj, Mapping) and "model_state_dict" in obj:
        trunk, source = obj["model_state_dict"], "model_state_dict"
    else:
        trunk, source = obj, "flat trunk"
    state = state_dict_of(trunk, "the VISSL trunk")
    return Extracted(select_prefix(state, "_feature_blocks.", dropped), dropped, source)


# ----------------------------------------------------------------------------------------------- registry

_FB = "https://github.com/facebookresearch/"

FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("torchvision", "PyTorch (torchvision)", "https://github.com/pytorch/vision", torchvision,
               container="flat state_dict"),
        Format("timm", "Ross Wightman (timm)", "https://github.com/huggingface/pytorch-image-models", timm,
               container="flat state_dict (.pth or .safetensors)"),
        Format("dissl", "Dubois et al. (DISSL)", "https://github.com/YannDubs/Invariant-Self-Supervised-Learning",
               dissl, container="flat torch.hub state_dict"),
        Format("dino", "Meta AI (DINO)", _FB + "dino", dino, branches=("teacher", "student"),
               container="backbone file, or {student, teacher, optimizer, epoch, args, dino_loss}"),
        Format("barlow_twins", "Meta AI (Barlow Twins)", _FB + "barlowtwins", barlow_twins,
               container="resnet50.pth, or {epoch, model, optimizer}"),
        Format("vicreg", "Meta AI (VICReg)", _FB + "vicreg", vicreg,
               container="resnet50.pth, or {epoch, model, optimizer}"),
        Format("swav", "Meta AI (SwAV)", _FB + "swav", swav,
               container="flat module.* state_dict, or {epoch, state_dict, optimizer[, amp]}"),
        Format("moco", "Meta AI (MoCo v1/v2)", _FB + "moco", moco,
               container="{epoch, arch, state_dict, optimizer}"),
        Format("mmselfsup", "OpenMMLab (mmselfsup 1.x, mmpretrain)", "https://github.com/open-mmlab/mmpretrain",
               mmselfsup, container="{meta, state_dict[, message_hub, optimizer, param_schedulers]}"),
        Format("solo_learn", "solo-learn", "https://github.com/vturrisi/solo-learn", solo_learn,
               cifar_stem="cifar_pad2", container="Lightning .ckpt"),
        Format("lightly", "Lightly", "https://github.com/lightly-ai/lightly", lightly,
               container="Lightning .ckpt, or {'<name>_parameters': Sequential state_dict}"),
        Format("vissl", "Meta AI (VISSL)", _FB + "vissl", vissl,
               container="{classy_state_dict: {base_model: {model: {trunk, heads}}}, ...}"),
    ]
}


def guess_format(obj: Any) -> str | None:
    """The format whose container `obj` looks like, for hints in error messages (None when unsure)."""
    if not isinstance(obj, Mapping):
        return None
    keys = set(map(str, obj))
    if {"teacher", "student"} & keys:
        return "dino"
    if "classy_state_dict" in keys:
        return "vissl"
    if "meta" in keys and "state_dict" in keys:
        return "mmselfsup"
    if "pytorch-lightning_version" in keys or "global_step" in keys:
        inner = obj.get("state_dict")
        if isinstance(inner, Mapping) and any(str(k).startswith(("teacher_backbone.", "online_classifier."))
                                              for k in inner):
            return "lightly"
        return "solo_learn"
    if "state_dict" in keys:
        inner = obj["state_dict"]
        if isinstance(inner, Mapping) and any(str(k).startswith("module.encoder_q.") for k in inner):
            return "moco"
        return "swav"
    if "model" in keys and "optimizer" in keys:
        return "barlow_twins or vicreg"
    return None
