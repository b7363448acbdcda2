"""Every weight file detkd reads goes through here: read without running code, mapped onto the
model it was meant for, and checked to have loaded what it claims.

Reading (:func:`load_weights_file`):

* ``.pth`` / ``.pyth`` files go through ``torch.load(..., weights_only=True)``: tensors, plain
  containers and numbers only. Everything detkd and detectron2 write (model weights, resume
  checkpoints with optimizer, scheduler and trainer state) reads this way.
* ``.pkl`` files (detectron2's model zoo, ImageNet backbones) go through :class:`NumpyUnpickler`,
  which admits numpy arrays, dtypes and plain containers and nothing else.
* A file that asks for anything else is refused with :class:`UnsafeWeightsError`, naming the file
  and what it asked for. A file you trust can be read with full unpickling by an explicit opt-in:
  ``MODEL.DISTILL.ALLOW_UNSAFE_PICKLE True`` in a yaml config, ``allow_unsafe_pickle=True`` in the
  Python API. Full unpickling can run any code the file's author put in it.
* A missing, truncated or corrupt file is a :class:`CheckpointReadError` naming the file.

Mapping (:class:`Checkpointer`, a ``DetectionCheckpointer``):

* into a ``DistillRCNN``: its own checkpoints (``student.*``, ``distillers.<name>.*``) load as they
  are, the layers of the methods both the file and the model have; the file's other methods are
  dropped and the model's new ones keep their initialisation, and both are logged. A file saved
  with positional keys (``distillers.<i>.*``) is mapped onto names by the method list it was
  trained with (the ``config.yaml`` beside it, else the model's own list when the counts agree), or
  refused naming its keys. A plain detector checkpoint (a ``GeneralizedRCNN`` ``model_final.pth``,
  an exported student, a model-zoo ``.pkl``, an ImageNet backbone ``.pkl``) is loaded into the
  student, with detectron2's own name-matching for model-zoo files;
* into a plain detector (a teacher, an exported student): a ``DistillRCNN`` checkpoint gives its
  ``student.*`` tensors, other files load as detectron2 loads them.

Checking: the tensors that loaded are counted and logged with the modules left at their
initialisation. When they cover less than :data:`MIN_LOADED_FRACTION` of the target's parameters
(the file is for another model), loading fails with :class:`WeightsMismatchError` naming the file.
A resume whose ``last_checkpoint`` names a missing or unreadable file falls back, with a warning,
to the newest readable checkpoint in the output directory, or fails naming every file it tried.

Resuming (:meth:`Checkpointer.resume_or_load`): every checkpoint a ``DistillRCNN`` saves records
its methods (``distill_methods``) and whatever the trainer asks to record (its config). A resume
whose checkpoint was trained with other methods, or whose distiller tensors have other shapes,
fails before any step with :class:`ResumeMismatchError`, naming both method sets and how to start
a new schedule from those weights instead.
"""

import glob
import logging
import os
import pickle
import re
from typing import Dict, List, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

__all__ = [
    "CheckpointReadError",
    "UnsafeWeightsError",
    "WeightsMismatchError",
    "NumpyUnpickler",
    "load_weights_file",
    "plain_detector_state",
    "Checkpointer",
    "MIN_LOADED_FRACTION",
    "ResumeMismatchError",
    "distill_methods_of",
]

logger = logging.getLogger(__name__)

# below this share of the target's parameter elements, a file "loads nothing" and is refused
MIN_LOADED_FRACTION = 0.1
UNSAFE_OPT_IN = "MODEL.DISTILL.ALLOW_UNSAFE_PICKLE True (allow_unsafe_pickle=True in Python)"


class CheckpointReadError(OSError):
    """A weight file is missing, truncated or corrupt."""


class UnsafeWeightsError(pickle.UnpicklingError):
    """A weight file asks the unpickler for something other than tensors, arrays and containers."""


class WeightsMismatchError(RuntimeError):
    """A weight file's tensors do not fit the model it was loaded into."""


class ResumeMismatchError(RuntimeError):
    """A resume checkpoint was trained with other distillation methods (or other shapes of their
    layers) than the model it is resumed into."""


class NumpyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes and plain containers: what detectron2's ``.pkl`` files hold.

    Any other global (a function, a class, ``os.system``) raises :class:`UnsafeWeightsError`
    before it is looked up, so nothing in the file can run.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        # protocol-5 pickles of arrays
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        # protocol-2 pickles written by Python 3 encode bytes (array data) through this
        ("_codecs", "encode"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "str"),
        ("builtins", "bytes"),
        ("builtins", "bool"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise UnsafeWeightsError(f"{module}.{name}")
        return super().find_class(module, name)


def load_weights_file(path: str, allow_unsafe_pickle: bool = False) -> Dict:
    """The object stored in the weight file ``path`` (a local file), read without running code.

    Raises :class:`CheckpointReadError` (missing or corrupt) or :class:`UnsafeWeightsError`
    (the file needs full unpickling; see the module docstring for the opt-in).
    """
    if not os.path.isfile(path):
        raise CheckpointReadError(f"weight file not found: {path}")
    try:
        if allow_unsafe_pickle:
            return _load_trusted(path)
        if path.endswith(".pkl"):
            with open(path, "rb") as f:
                return NumpyUnpickler(f, encoding="latin1").load()
        return torch.load(path, map_location="cpu", weights_only=True)
    except UnsafeWeightsError as e:
        raise _refused(path, str(e)) from None
    except pickle.UnpicklingError as e:
        # torch's weights-only unpickler:
        # "Weights only load failed ... Unsupported global: GLOBAL x"
        if "Weights only load failed" in str(e):
            found = re.search(r"Unsupported (?:global|operand)[^\n]*", str(e))
            raise _refused(path, found.group(0) if found else str(e).splitlines()[0]) from None
        raise CheckpointReadError(f"weight file {path} is corrupt or truncated ({e})") from e
    except Exception as e:  # a broken file fails in any of the parsers' own ways
        raise CheckpointReadError(
            f"weight file {path} is corrupt or truncated " f"({type(e).__name__}: {e})"
        ) from e


def _load_trusted(path: str):
    """Full unpickling, only behind the explicit opt-in: it runs whatever code the file holds."""
    logger.warning("Reading %s with full unpickling (ALLOW_UNSAFE_PICKLE): it can run code", path)
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    return torch.load(path, map_location="cpu", weights_only=False)


def _refused(path: str, what: str) -> UnsafeWeightsError:
    return UnsafeWeightsError(
        f"refused to read {path}: it asks the unpickler for {what}, which can run code. "
        f"Weight files hold tensors and arrays only. If you trust this file, set {UNSAFE_OPT_IN}."
    )


def plain_detector_state(state: Dict[str, object]) -> Dict[str, object]:
    """A ``DistillRCNN`` state dict's student part with plain detector names; others unchanged."""
    if not any(k.startswith("student.") for k in state):
        return state
    return {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}


def _is_distill_model(model: nn.Module) -> bool:
    return hasattr(model, "student") and hasattr(model, "distillers")


def _prefixes(names: List[str], depth: int = 2) -> List[str]:
    """Module prefixes (``depth`` names deep) of ``names``, in order, once each."""
    return list(dict.fromkeys(".".join(n.split(".")[:depth]) for n in names))


_POSITIONAL = re.compile(r"^distillers\.(\d+)\.(.*)$")
_BALANCER_PER_METHOD = ("balancer.scale_", "balancer.ratio_sum_")


def _method_of_key(key: str) -> Optional[str]:
    """The method a DistillRCNN state key belongs to (``distillers.<name>.*``, the balancer's
    per-method buffers), or None."""
    if key.startswith("distillers."):
        return key.split(".")[1]
    for prefix in _BALANCER_PER_METHOD:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return None


def distill_methods_of(checkpoint: Dict) -> List[str]:
    """The distillation methods a ``DistillRCNN`` checkpoint was trained with: its record
    (``distill_methods``), or for a file saved without one the methods its keys name (a method
    with no tensors of its own is not seen then)."""
    if "distill_methods" in checkpoint:
        return list(checkpoint["distill_methods"])
    names = (_method_of_key(k) for k in checkpoint.get("model", {}))
    return list(dict.fromkeys(n for n in names if n is not None))


def _methods_saved_beside(path: str) -> Optional[List[str]]:
    """The methods enabled in the ``config.yaml`` train_net.py wrote beside ``path`` (registration
    order, the order of positional keys), or None when there is none to read."""
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    if not os.path.isfile(config):
        return None
    from .config import enabled_methods, load_config

    try:
        cfg = load_config(config)
    except Exception as e:  # a config of methods not registered here, or not detkd's
        logger.info("%s beside %s cannot be read as a detkd config (%s)", config, path, e)
        return None
    return enabled_methods(cfg)


def _fmt(methods) -> str:
    return ", ".join(methods) if methods else "none"


class Checkpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads files safely, maps them onto the student, checks and
    logs what loaded, and resumes past a broken ``last_checkpoint`` (see the module docstring).

    Args:
        allow_unsafe_pickle: read files with full unpickling (only for files you trust).
        min_loaded_fraction: refuse a file whose tensors cover less of the target's parameters.
        record: extra entries written into every checkpoint saved (e.g. ``{"config": cfg.dump()}``,
            which :class:`~detkd.engine.DistillTrainer` records).
    """

    def __init__(
        self,
        model,
        save_dir="",
        *,
        allow_unsafe_pickle: bool = False,
        min_loaded_fraction: float = MIN_LOADED_FRACTION,
        record: Optional[Dict] = None,
        **checkpointables,
    ):
        super().__init__(model, save_dir, **checkpointables)
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.min_loaded_fraction = min_loaded_fraction
        self.record = dict(record or {})
        self.loaded_from: Optional[str] = None
        # how the loading target is called in messages
        self.target_name = "student" if _is_distill_model(self.model) else "model"
        self._path = None
        self._resuming = False

    # ----- writing ---------------------------------------------------------------------------
    def save(self, name, **kwargs):
        """detectron2's ``save``, with :attr:`record` and, for a ``DistillRCNN``, the names of its
        methods (``distill_methods``) in the file."""
        extra = dict(self.record)
        if _is_distill_model(self.model):
            extra["distill_methods"] = list(self.model.distillers)
        super().save(name, **{**extra, **kwargs})

    # ----- reading ---------------------------------------------------------------------------
    def load(self, path, *args, **kwargs):
        local = path.split("?")[0] if path else path
        if local and "://" not in local and not os.path.isfile(local):
            raise CheckpointReadError(f"weight file not found: {path}")
        self._path = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # detectron2 leaves this set when loading fails, which would break the next load
            self._path, self._parsed_url_during_load = None, None

    def _load_file(self, filename):
        data = load_weights_file(filename, self.allow_unsafe_pickle)
        if not isinstance(data, dict):
            raise CheckpointReadError(
                f"weight file {filename} holds a {type(data).__name__}, not a dict"
            )
        if filename.endswith(".pkl"):
            if "model" in data and "__author__" in data:  # detectron2's model zoo
                return data
            # Caffe2 / Detectron1 / ImageNet backbones: names converted by detectron2's heuristics
            blobs = data.get("blobs", data)
            blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
            return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in data:
                raise CheckpointReadError(f"{filename}: a pycls checkpoint must hold 'model_state'")
            state = {
                k: v
                for k, v in data["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if "model" not in data:
            data = {"model": data}
        if "matching_heuristics=True" in (self._parsed_url_during_load.query or ""):
            data["matching_heuristics"] = True
        return data

    # ----- mapping and checking --------------------------------------------------------------
    def _load_model(self, checkpoint):
        state = checkpoint["model"]
        if state and all(k.startswith("module.") for k in state):  # saved from a DDP-wrapped model
            state = checkpoint["model"] = {k[len("module.") :]: v for k, v in state.items()}
        path = self._path
        if _is_distill_model(self.model):
            if not any(k.startswith(("student.", "distillers.")) for k in state):
                logger.info("%s is a plain detector checkpoint: loading it into the student", path)
                return self._load_into_student(checkpoint)
            checkpoint["model"] = self._named_distiller_keys(state, checkpoint)
            self._match_methods(checkpoint)
        else:
            checkpoint["model"] = plain_detector_state(state)
        incompatible = super()._load_model(checkpoint)
        self._check_loaded(incompatible)
        return incompatible

    def _named_distiller_keys(self, state: Dict, checkpoint: Dict) -> Dict:
        """``state`` with positional distiller keys (``distillers.<i>.*``, files saved before the
        methods were held by name) renamed to ``distillers.<name>.*``, by the method list the file
        was trained with."""
        positional = sorted({int(m.group(1)) for m in map(_POSITIONAL.match, state) if m})
        if not positional:
            return state
        path = self._path
        names = checkpoint.get("distill_methods") or _methods_saved_beside(path)
        source = "the config.yaml beside it"
        if names is None:
            names, source = list(self.model.distillers), "this model's (the same count)"
        if len(names) <= positional[-1]:
            keys = sorted(k for k in state if _POSITIONAL.match(k))
            raise WeightsMismatchError(
                f"{path} holds distiller tensors under positional keys ({_prefixes(keys)[:6]}) "
                f"for {positional[-1] + 1} methods, but the method list it was trained with is "
                f"unknown ({_fmt(names)} has {len(names)}). Load it with the config it was trained "
                "with, or drop its distillers.* keys to load the student alone"
            )
        logger.info(
            "%s: positional distiller keys mapped by the method list of %s: %s",
            path,
            source,
            ", ".join(f"{i} -> {names[i]}" for i in positional),
        )
        renamed = {}
        for key, value in state.items():
            match = _POSITIONAL.match(key)
            renamed[
                f"distillers.{names[int(match.group(1))]}.{match.group(2)}" if match else key
            ] = value
        return renamed

    def _match_methods(self, checkpoint: Dict) -> None:
        """Load the layers of the methods both the file and the model have. Resuming, any other
        difference (methods, shapes of their tensors) is a :class:`ResumeMismatchError`; otherwise
        the file's other methods are dropped and the model's new ones keep their initialisation,
        both logged."""
        state, path = checkpoint["model"], self._path
        saved = distill_methods_of(checkpoint)
        ours = list(self.model.distillers)
        own = self.model.state_dict()
        reshaped = [
            f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})"
            for k, v in state.items()
            if _method_of_key(k) is not None
            and k in own
            and isinstance(v, torch.Tensor)
            and v.shape != own[k].shape
        ]
        if self._resuming and (sorted(saved) != sorted(ours) or reshaped):
            what = (
                f"checkpoint: {_fmt(saved)}; config: {_fmt(ours)}"
                if sorted(saved) != sorted(ours)
                else f"distiller tensors of other shapes: {', '.join(reshaped[:6])}"
            )
            raise ResumeMismatchError(
                f"cannot resume from {path}: it was trained with other distillation methods than "
                f"the config enables ({what}). A resume continues that run exactly: use the config "
                f"it was trained with. To start a new schedule from its weights instead, train "
                f"without --resume and with MODEL.WEIGHTS {path} (into another OUTPUT_DIR)"
            )
        dropped = [m for m in saved if m not in ours]
        new = [m for m in ours if m not in saved]
        if dropped:
            for k in [k for k in state if _method_of_key(k) in dropped]:
                del state[k]
            logger.info(
                "%s: the layers of %s are not loaded (no such method is enabled here)",
                path,
                _fmt(dropped),
            )
        if new:
            logger.info("%s holds no layers of %s: they keep their initialisation", path, _fmt(new))

    def load_checkpoint_dict(self, checkpoint: Dict, path: str):
        """Load ``checkpoint``, the contents of the file ``path`` already read, into the model with
        the mapping, checks and messages of :meth:`load` (a distillation model's student loads a
        plain detector's file through it)."""
        self._path = path
        try:
            # detectron2 loads a dict only inside load(); its hooks of this class are the way in
            incompatible = self._load_model(checkpoint)
            if incompatible is not None:
                self._log_incompatible_keys(incompatible)
        finally:
            self._path = None

    def _load_into_student(self, checkpoint):
        inner = Checkpointer(
            self.model.student,
            allow_unsafe_pickle=self.allow_unsafe_pickle,
            min_loaded_fraction=self.min_loaded_fraction,
        )
        inner.target_name = "student"
        inner.load_checkpoint_dict(checkpoint, self._path)
        self.loaded_from = inner.loaded_from
        return None  # logged above, with the student's own names

    def _target(self) -> nn.Module:
        return self.model.student if _is_distill_model(self.model) else self.model

    def _check_loaded(self, incompatible) -> None:
        target = self._target()
        prefix = "student." if target is not self.model else ""
        not_loaded = set(incompatible.missing_keys) | {
            k for k, _, _ in incompatible.incorrect_shapes
        }
        params = {prefix + n: p.numel() for n, p in target.named_parameters()}
        # BatchNorm fills a missing num_batches_tracked without reporting it: not counted
        tensors = [prefix + n for n in target.state_dict() if not n.endswith("num_batches_tracked")]
        loaded = [n for n in tensors if n not in not_loaded]
        total = sum(params.values())
        fraction = sum(v for n, v in params.items() if n not in not_loaded) / max(total, 1)
        what = self.target_name
        if fraction < self.min_loaded_fraction:
            raise WeightsMismatchError(
                f"{self._path} does not fit the {what}: its tensors cover {fraction:.1%} of the "
                f"{what}'s parameters ({len(loaded)} of {len(tensors)} tensors loaded). Is it a "
                f"checkpoint of another architecture? File keys look like "
                f"{_prefixes(sorted(incompatible.unexpected_keys))[:6]}, {what} keys like "
                f"{_prefixes(tensors)[:6]}"
            )
        left = sorted(n for n in tensors if n in not_loaded)
        logger.info(
            "Loaded %d of %d %s tensors (%.1f%% of its parameters) from %s%s",
            len(loaded),
            len(tensors),
            what,
            100 * fraction,
            self._path,
            f"; left at their initialisation: {', '.join(_prefixes(left, 3))}" if left else "",
        )
        self.loaded_from = self._path

    # ----- resume ----------------------------------------------------------------------------
    def resume_or_load(self, path, *, resume=True):
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        self._resuming = True
        try:
            return self._resume()
        finally:
            self._resuming = False

    def _resume(self):
        last = self.get_checkpoint_file()
        try:
            if not last:  # fvcore returns "" when last_checkpoint cannot be read
                raise CheckpointReadError(f"{self.save_dir}/last_checkpoint cannot be read")
            return self.load(last)
        except CheckpointReadError as e:
            first_error = e
        candidates = sorted(
            glob.glob(os.path.join(self.save_dir, "model_*.pth")),
            key=os.path.getmtime,
            reverse=True,
        )
        tried = [last]
        for candidate in candidates:
            if os.path.abspath(candidate) == os.path.abspath(last):
                continue
            tried.append(candidate)
            try:
                result = self.load(candidate)
            except CheckpointReadError:
                continue
            logger.warning(
                "RESUME: last_checkpoint names %s, which cannot be read (%s); resumed from "
                "%s, the newest readable checkpoint in %s instead",
                last,
                first_error,
                candidate,
                self.save_dir,
            )
            return result
        raise CheckpointReadError(
            f"cannot resume from {self.save_dir}: last_checkpoint names {last} ({first_error}) "
            f"and no other checkpoint there can be read (tried {tried}). "
            "Remove last_checkpoint to start over."
        )
