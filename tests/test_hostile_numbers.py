"""Numbers past what the machine or llama.cpp can take: each is refused in one line naming the bound it is
past, before anything is allocated or handed to llama.cpp (where a 32-bit field would wrap it silently, or
an assertion abort the process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mixtral_cli.base.bounds import logical_cpus
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

pytestmark = pytest.mark.usefixtures("demo_model")

INT32_MAX = 2**31 - 1


@pytest.mark.parametrize(
    ("option", "value", "bound"),
    [
        ("--ctx-size", "10000000000", f"is above {INT32_MAX}"),  # wrapped at 2^32 to 1.4 billion tokens
        ("--ctx-size", "4294967312", f"is above {INT32_MAX}"),  # wrapped to 256
        ("--ctx-size", "8", "is below 16"),
        ("--threads", "100000", f"this machine's {logical_cpus()} logical CPU"),
        ("--threads", "0", "is below 1"),
        ("--batch-size", "4294967296", f"is above {INT32_MAX}"),
        ("--batch-size", "0", "is below 1"),
        ("--n-gpu-layers", "2147483648", f"is above {INT32_MAX}"),
        ("--n-gpu-layers", "-2", "is below -1, which means all layers"),
        ("--n-cpu-moe", "4294967296", f"is above {INT32_MAX}"),
        ("--temperature", "nan", "is not a finite number"),
        ("--temperature", "inf", "is not a finite number"),
        ("--temperature", "1e39", "the largest 32-bit float"),
        ("--temperature", "-0.5", "is below 0"),
        ("--top-p", "1.5", "is above 1, a share of the probability"),
        ("--top-p", "nan", "is not a finite number"),
        ("--min-p", "-0.1", "is below 0"),
        ("--top-k", "2147483648", f"is above {INT32_MAX}"),
        ("--repeat-penalty", "1e300", "the largest 32-bit float"),
        ("--max-tokens", "0", "is below 1"),
        ("--max-tokens", "2147483648", f"is above {INT32_MAX}"),
        ("--seed", "4294967295", "a random seed"),
        ("--seed", "-1", "is below 0"),
    ],
)
def test_an_option_past_its_bound_is_a_usage_error_naming_the_bound(mixtral, option, value, bound):
    result = mixtral("complete", "-m", "tiny", option, value, "Hi")

    assert result.exit_code == 2
    assert bound in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("split", "bound"),
    [("1e39,1", "the largest 32-bit float"), ("nan,1", "is not a finite number"), ("1,inf", "is not a finite number")],
)
def test_a_tensor_split_share_past_a_32_bit_float_is_a_usage_error(mixtral, split, bound):
    result = mixtral("devices", "--tensor-split", split)

    assert result.exit_code == 2
    assert bound in result.stderr


@pytest.mark.parametrize(
    ("args", "bound"),
    [
        (("quantize", "model.gguf", "--threads", "100000"), "logical CPU"),
        (("summarize", "-m", "tiny", "--max-words", "4294967296"), "a context of 2^31 tokens"),
        (("summarize", "-m", "tiny", "--max-words", "4"), "is below 5"),
        (("tiny", "out", "--layers", "513"), "llama.cpp's most layers (512)"),
        (("tiny", "out", "--experts", "1025"), "llama.cpp's most experts (1024)"),
        (("tiny", "out", "--experts-used", "0"), "is below 1"),
        (("tiny", "out", "--hidden-size", "4294967296"), f"is above {INT32_MAX}"),
        (("tiny", "out", "--shards", "100000"), "five-digit name"),
        (("tiny", "out", "--seed", "-1"), "is below 0"),
        (("tiny", "out", "--seed", str(2**64)), "64-bit seed"),
    ],
)
def test_every_commands_numbers_are_bounded_as_usage_errors(mixtral, tmp_path, args, bound):
    os.chdir(tmp_path)
    result = mixtral(*args)

    assert result.exit_code == 2
    assert bound in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_context_past_the_trained_one_is_refused_naming_it(mixtral):
    result = mixtral("complete", "-m", "tiny", "-n", "2", "--ctx-size", "32769", "Hi")

    assert result.exit_code == 1
    assert "--ctx-size 32769 is more than the 32768 tokens this model was trained on." in result.stderr


@pytest.fixture(scope="module")
def long_context_model(convert):
    """A tiny model trained (so its header says) on a billion tokens: a KV cache of 512 GiB at full length."""
    return convert(TinyMixtralSpec(context_length=2**30), "Q8_0")


def test_a_context_memory_cannot_hold_is_refused_before_llama_cpp_allocates_it(mixtral, long_context_model):
    result = mixtral("complete", "-m", long_context_model, "-n", "2", "--ctx-size", str(2**30), "Hi")

    assert result.exit_code == 1
    assert f"A context of {2**30} tokens (batches of 512) needs 512.0" in result.stderr
    assert "Give a smaller --ctx-size (" in result.stderr
    assert "could not create a context" not in result.stderr  # llama.cpp was never asked


def test_a_failed_allocation_quotes_llama_cpps_error_not_a_warning(long_context_model, tmp_path):
    # A context that memory holds (1 GiB of KV cache), in a child whose address space cannot hold it: llama.cpp's
    # allocation fails for real, cheaply, and the message must carry its error.
    peak = tmp_path / "peak"
    child = (
        "import resource, sys\n"
        "from mixtral_cli.cli import main\n"
        "import llama_cpp\n"
        "size = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + 2**29, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    main(sys.argv[2:])\n"
        "finally:\n"
        # VmHWM is this process's own peak: ru_maxrss starts from the parent's peak at exec.
        "    hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
        "    open(sys.argv[1], 'w').write(hwm.split()[1])\n"
    )
    args = ["complete", "-m", str(long_context_model), "-n", "2", "--ctx-size", str(2**21), "-t", "1", "Hi"]
    result = subprocess.run(
        [sys.executable, "-c", child, str(peak), *args], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 1, result.stderr
    assert f"could not create a context of {2**21} tokens: " in result.stderr
    assert "failed to allocate" in result.stderr
    assert "Traceback" not in result.stderr
    assert int(peak.read_text()) < 2**20  # KiB: the child stayed under 1 GiB


def test_request_parameters_past_their_bounds_are_refused_naming_the_bound(mixtral, tmp_path):
    request = {"input_data": {"input_string": ["Hi"], "parameters": {"max_new_tokens": 10**12}}}
    (tmp_path / "request.json").write_text(json.dumps(request))

    result = mixtral("complete", "-m", "tiny", "--request", tmp_path / "request.json")

    assert result.exit_code == 1
    assert f'"parameters.max_new_tokens" 1000000000000 is above {INT32_MAX}' in result.stderr


def test_an_infinite_request_temperature_is_refused(mixtral, tmp_path):
    (tmp_path / "request.json").write_text(
        '{"input_data": {"input_string": ["Hi"], "parameters": {"temperature": 1e400}}}'
    )

    result = mixtral("complete", "-m", "tiny", "--request", tmp_path / "request.json")

    assert result.exit_code == 1
    assert '"parameters.temperature" inf is not a finite number.' in result.stderr


def test_request_parameters_that_are_not_an_object_are_refused(mixtral):
    result = mixtral(
        "complete", "-m", "tiny", "--request", "-", input='{"input_data": {"input_string": ["Hi"], "parameters": [1]}}'
    )

    assert result.exit_code == 1
    assert '"parameters" must be an object' in result.stderr


@pytest.mark.parametrize(
    ("line", "bound"),
    [
        ("/set top_k 99999999999", f"is above {INT32_MAX}"),
        ("/set temperature inf", "is not a finite number"),
        ("/set max_tokens 2147483648", f"is above {INT32_MAX}"),
        ("/set top_p nan", "is not a finite number"),
    ],
)
def test_chat_settings_past_their_bounds_are_refused_and_the_chat_goes_on(mixtral, line, bound):
    result = mixtral("chat", "-m", "tiny", "-n", "2", "--ctx-size", "512", input=f"{line}\n/show\n")

    assert result.exit_code == 0
    assert bound in result.stderr
    assert "Traceback" not in result.stderr


def test_a_tiny_model_this_machine_cannot_hold_is_refused_before_anything_is_written(mixtral, tmp_path):
    result = mixtral("tiny", tmp_path / "huge", "--hidden-size", "1048576", "--intermediate-size", "1048576")

    assert result.exit_code == 1
    assert "GiB of memory" in result.stderr or "free but this needs" in result.stderr
    assert not (tmp_path / "huge").exists()


def test_more_shards_than_tensors_are_refused(mixtral, tmp_path):
    result = mixtral("tiny", tmp_path / "t", "--layers", "1", "--experts", "1", "--experts-used", "1", "--shards", "50")

    assert result.exit_code == 1
    assert "50 shards for 13 tensors would leave shards empty." in result.stderr
