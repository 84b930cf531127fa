from __future__ import annotations

import dataclasses

import pytest

from vaebench.spec import (
    DEFAULT,
    LATER_FIELDS,
    SPEED_KNOBS,
    Capabilities,
    RunSpec,
    format_value,
    parse_value,
    validate,
)


def fields_of(spec: RunSpec, caps: Capabilities | None = None) -> set[str]:
    return {p.field for p in validate(spec, caps)}


def test_defaults_are_the_seed_configuration() -> None:
    assert (DEFAULT.batch_size, DEFAULT.epochs, DEFAULT.lr, DEFAULT.loader) == (128, 10, 1e-3, "reference")
    assert validate(DEFAULT, Capabilities(logical_cores=2)) == []


def test_key_is_stable_and_tells_specs_apart() -> None:
    assert RunSpec().key() == RunSpec().key()
    assert RunSpec(batch_size=64).key() != RunSpec().key()
    assert len(RunSpec().key()) == 12


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (RunSpec(batch_size=0), "batch_size"),
        (RunSpec(threads=0), "threads"),
        (RunSpec(epochs=0), "epochs"),
        (RunSpec(steps=0), "steps"),
        (RunSpec(workers=-1), "workers"),
        (RunSpec(lr=0.0), "lr"),
        (RunSpec(device="tpu"), "device"),
        (RunSpec(device="cuda:x"), "device"),
        (RunSpec(device="cuda:"), "device"),  # no index after the colon: not cuda:0
        (RunSpec(amp="fp16"), "amp"),
        (RunSpec(amp="fp8"), "amp"),
        (RunSpec(loader="fast"), "loader"),
        (RunSpec(compile="fast"), "compile"),
        (RunSpec(adam="apex"), "adam"),
        (RunSpec(device="cuda", adam="compiled", amp="fp16"), "adam"),
        (RunSpec(data="imagenet"), "data"),
        (RunSpec(loader="tensor", workers=2), "workers"),
        (RunSpec(loader="tensor", workers=1), "workers"),
        (RunSpec(pin_memory=True), "pin_memory"),
    ],
)
def test_each_bad_value_is_named(spec: RunSpec, field: str) -> None:
    assert field in fields_of(spec)


def test_cuda_without_cuda_is_refused_only_where_there_is_none() -> None:
    assert fields_of(RunSpec(device="cuda"), Capabilities(cuda_devices=0)) == {"device"}
    assert fields_of(RunSpec(device="cuda:1"), Capabilities(cuda_devices=1)) == {"device"}
    assert fields_of(RunSpec(device="cuda:1", amp="fp16"), Capabilities(cuda_devices=2)) == set()


def test_parse_value_types_and_errors() -> None:
    assert parse_value("batch_size", "256") == 256
    assert parse_value("pin_memory", "on") is True
    assert parse_value("threads", "default") is None
    assert parse_value("lr", "1e-3") == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="whole number"):
        parse_value("batch_size", "big")
    with pytest.raises(ValueError, match="unknown run field"):
        parse_value("colour", "red")


def test_from_dict_ignores_extra_columns_and_restores_types() -> None:
    row = {"batch_size": 64.0, "threads": float("nan"), "pin_memory": "false", "real_s": 3.2}
    spec = RunSpec.from_dict(row)
    assert spec.batch_size == 64 and isinstance(spec.batch_size, int)
    assert spec.threads is None and spec.pin_memory is False
    assert spec.label() == "batch_size=64"


def test_from_dict_does_not_round_a_fraction_into_a_whole_number() -> None:
    spec = RunSpec.from_dict({"batch_size": 2.5, "epochs": 3.0})
    assert spec.batch_size == 2.5 and spec.epochs == 3  # 3.0 is the whole number 3; 2.5 is not 2
    problems = [p for p in validate(spec) if p.field == "batch_size"]
    assert problems and problems[0].message == "batch size must be a whole number, got 2.5"


def test_fields_added_later_keep_old_keys_at_their_default() -> None:
    import hashlib
    import json

    first_release = {k: v for k, v in RunSpec().to_dict().items() if k not in LATER_FIELDS}
    old_key = hashlib.sha1(json.dumps(first_release, sort_keys=True).encode()).hexdigest()[:12]
    assert RunSpec().key() == old_key
    assert RunSpec(threads=16).key() == "ba69c1bcdac6"  # as recorded before issue 13's fields
    for changed in (RunSpec(sync="epoch"), RunSpec(omp_wait_policy="passive"), RunSpec(allocator="jemalloc"),
                    RunSpec(bind=True), RunSpec(adam="fused")):
        assert changed.key() != old_key


def test_an_uninstrumented_run_is_a_configuration_of_its_own() -> None:
    from vaebench.cli import build_parser, spec_from_args

    spec = spec_from_args(build_parser().parse_args(["run", "--no-instrument", "--threads", "16"]))
    assert spec.instrument is False and "instrument=off" in spec.label()
    assert spec.key() != RunSpec(threads=16).key() == "ba69c1bcdac6"  # never pooled with timed runs
    assert spec_from_args(build_parser().parse_args(["run"])).instrument is True


def test_cuda_graphs_need_cuda_and_sync_epoch() -> None:
    problems = {p.message for p in validate(RunSpec(cuda_graphs=True))}
    assert any("needs a CUDA device" in m for m in problems)
    assert any("needs --sync epoch" in m for m in problems)
    cuda = Capabilities(cuda_devices=1)
    assert validate(RunSpec(device="cuda", sync="epoch", cuda_graphs=True), cuda) == []
    assert any("GradScaler" in p.message for p in validate(RunSpec(device="cuda", sync="epoch", cuda_graphs=True,
                                                                    amp="fp16"), cuda))
    assert [p.field for p in validate(RunSpec(sync="sometimes"))] == ["sync"]


def test_ranks_multiply_the_batch_and_keep_old_keys() -> None:
    spec = RunSpec(batch_size=64, nproc_per_node=4, nnodes=2)
    assert spec.world_size == 8 and spec.global_batch == 512
    assert RunSpec(nproc_per_node=1, nnodes=1).key() == RunSpec().key()  # records before the field keep theirs
    assert RunSpec(nproc_per_node=2).key() != RunSpec().key()
    old = {**RunSpec().to_dict(), "nproc_per_node": float("nan"), "nnodes": None}  # a table with older rows
    assert RunSpec.from_dict(old) == RunSpec()


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (RunSpec(nproc_per_node=0), "nproc_per_node", "at least 1"),
        (RunSpec(nnodes=0), "nnodes", "at least 1"),
        (RunSpec(nproc_per_node=2, device="mps"), "device", "gloo"),
        (RunSpec(nproc_per_node=2, device="cuda:1"), "device", "rank r uses cuda:r"),
        (RunSpec(nproc_per_node=2, compile="default"), "compile", "not supported"),
        (RunSpec(nproc_per_node=2, adam="compiled"), "adam", "not supported"),
        (RunSpec(nproc_per_node=2, profile=True), "profile", "not supported"),
        (RunSpec(nproc_per_node=4, batch_size=128, samples=256), "batch_size", "4 ranks x batch 128"),
    ],
)
def test_rank_problems_are_named(spec: RunSpec, field: str, words: str) -> None:
    found = [p for p in validate(spec) if p.field == field]
    assert found and words in found[0].message


def test_every_cuda_rank_needs_a_gpu_of_its_own() -> None:
    caps = Capabilities(cuda_devices=2, logical_cores=8)
    assert validate(RunSpec(device="cuda", nproc_per_node=2), caps) == []
    problems = validate(RunSpec(device="cuda", nproc_per_node=4), caps)
    assert [p.field for p in problems] == ["nproc_per_node"]
    assert "4 CUDA ranks asked for, but 2 GPUs here" in problems[0].message


def test_kernel_knobs_take_only_their_values() -> None:
    assert [p.field for p in validate(RunSpec(omp_wait_policy="sometimes"))] == ["omp_wait_policy"]
    assert [p.field for p in validate(RunSpec(allocator="foo"))] == ["allocator"]
    assert validate(RunSpec(omp_wait_policy="passive", bind=True, threads=64), Capabilities(logical_cores=2)) == []
    with pytest.raises(ValueError, match="unknown OpenMP wait policy 'sometimes'"):
        parse_value("omp_wait_policy", "sometimes")
    with pytest.raises(ValueError, match="unknown allocator 'foo'; choose from system, jemalloc, tcmalloc"):
        parse_value("allocator", "foo")
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        parse_value("threads", "0")
    assert parse_value("bind", "on") is True and parse_value("omp_wait_policy", "active") == "active"


def test_an_allocator_this_machine_lacks_names_the_package_to_install() -> None:
    spec = RunSpec(allocator="jemalloc")
    problems = validate(spec, Capabilities(logical_cores=2))
    assert [p.field for p in problems] == ["allocator"]
    assert "libjemalloc2" in problems[0].message and "--allocator-path" in problems[0].message
    assert "libtcmalloc-minimal4" in validate(RunSpec(allocator="tcmalloc"), Capabilities())[0].message
    assert validate(spec, Capabilities(logical_cores=2, allocators=("jemalloc",))) == []
    assert validate(spec) == []  # without capabilities only the value itself is judged


def test_a_record_from_before_a_field_existed_reads_as_its_default() -> None:
    old = {"device": "cpu", "threads": 2.0, "sync": float("nan"), "omp_wait_policy": float("nan"),
           "allocator": None, "bind": float("nan")}
    spec = RunSpec.from_dict(old)
    assert (spec.sync, spec.omp_wait_policy, spec.allocator, spec.bind) == ("step", "default", "system", False)
    assert spec == RunSpec(threads=2)


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (RunSpec(lr=float("inf")), "lr", "finite"),
        (RunSpec(lr=float("nan")), "lr", "finite"),
        (RunSpec(samples=10**12), "samples", "at most 1,000,000"),
        (RunSpec(batch_size=10**12, samples=10**12), "samples", "at most"),
        (RunSpec(epochs=10**9), "epochs", "at most"),
        (RunSpec(steps=10**12), "steps", "at most"),
        (RunSpec(threads=99_999), "threads", "at most 1,024"),
        (RunSpec(interop_threads=99_999), "interop_threads", "at most"),
        (RunSpec(workers=10_000), "workers", "at most"),
        (RunSpec(profile_steps=10**9), "profile_steps", "at most"),
        (RunSpec(seed=-1), "seed", "0 or more"),
        (RunSpec(seed=2**70), "seed", "at most"),
        (RunSpec(batch_size="64"), "batch_size", "whole number"),  # type: ignore[arg-type]
        (RunSpec(batch_size=True), "batch_size", "whole number"),  # type: ignore[arg-type]
        (RunSpec(pin_memory=3), "pin_memory", "on or off"),  # type: ignore[arg-type]
        (RunSpec(device=7), "device", "text"),  # type: ignore[arg-type]
    ],
)
def test_numbers_that_size_memory_or_time_are_bounded_and_finite(spec: RunSpec, field: str, words: str) -> None:
    problems = [p for p in validate(spec, Capabilities(logical_cores=2)) if p.field == field]
    assert problems and words in problems[0].message, validate(spec)
    assert problems[0].of_value


def test_oversubscription_stays_allowed_up_to_the_cap() -> None:
    assert validate(RunSpec(threads=64), Capabilities(logical_cores=2)) == []
    assert validate(RunSpec(threads=1024, samples=1_000_000, epochs=1000), Capabilities(logical_cores=2)) == []


def test_a_batch_of_the_whole_epoch_is_allowed_and_one_more_is_not() -> None:
    assert validate(RunSpec(batch_size=1000, samples=1000)) == []  # one step per epoch
    assert fields_of(RunSpec(batch_size=1001, samples=1000)) == {"batch_size"}


def test_parse_value_refuses_what_validate_would() -> None:
    assert parse_value("lr", "0.01") == 0.01
    for name, text in (("lr", "inf"), ("lr", "nan"), ("samples", "1e12"), ("threads", "99999"), ("epochs", "0")):
        with pytest.raises(ValueError, match=name.replace("_", " ")):
            parse_value(name, text)


def test_every_adam_implementation_is_a_speed_knob_and_compiled_counts_as_compiling() -> None:
    cuda = Capabilities(cuda_devices=1)
    graphed = RunSpec(device="cuda", sync="epoch", cuda_graphs=True)
    for impl in ("auto", "foreach", "fused", "compiled"):
        assert validate(RunSpec(adam=impl)) == []
        assert validate(dataclasses.replace(graphed, adam=impl), cuda) == []
    assert RunSpec(adam="compiled").compiles and RunSpec(compile="default").compiles
    assert not RunSpec(adam="fused").compiles
    assert (RunSpec().adam_impl, graphed.adam_impl, dataclasses.replace(graphed, adam="foreach").adam_impl) == (
        "torch", "fused", "foreach")
    assert "adam" in SPEED_KNOBS and "adam=fused" in RunSpec(adam="fused").label()
    assert validate(RunSpec(device="cuda", adam="fused", amp="fp16"), cuda) == []


def test_steps_beyond_what_the_epochs_hold_are_named() -> None:
    short = RunSpec(steps=20, epochs=1, samples=1000).steps_short()
    assert "--steps 20 is more than the 8 steps that 1 epoch of 1000 samples at batch 128 hold" in short
    assert RunSpec(steps=8, epochs=1, samples=1000).steps_short() == ""
    assert RunSpec(epochs=1, samples=1000).steps_short() == ""
    assert "the 4 steps" in RunSpec(steps=5, epochs=1, samples=1000, nproc_per_node=2).steps_short()


@pytest.mark.parametrize("value, text", [
    (1e9, "1e+09"), (1e-3, "0.001"), (0.0012345678, "0.0012345678"), (2.0, "2"), (True, "on"), (None, "default"),
])
def test_a_label_shows_a_float_short_but_never_rounded(value: object, text: str) -> None:
    assert format_value(value) == text
    if isinstance(value, float):
        assert RunSpec(lr=value).label(("lr",)) == f"lr={text}"
