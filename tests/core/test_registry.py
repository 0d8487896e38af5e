import re
from typing import Literal

import pytest

from attnbench import Attention, SpecError, available_attention, canonical_spec, create_attention, register_attention
from attnbench.core.registry import ATTENTION, options_of, parse_value, split_spec


class _Configurable(Attention):
    family = "test"

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        radius: int = 4,
        ratio: float = 0.5,
        flag: bool = False,
        mode: Literal["a", "b"] = "a",
        positions: list[int] | None = None,
        label: str = "x",
        limit: int | None = None,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        self.options = {
            "radius": radius,
            "ratio": ratio,
            "flag": flag,
            "mode": mode,
            "positions": positions,
            "label": label,
            "limit": limit,
        }


@pytest.fixture
def configurable(scratch_registry: None) -> str:
    register_attention("cfg-test")(_Configurable)
    return "cfg-test"


def test_split_spec_parses_every_value_kind() -> None:
    name, opts = split_spec("win:a=3,b=-2.5,c=true,d=none,e=[0,64,128],f=hello,g=1e-3,h=[]")
    assert name == "win"
    assert opts == {"a": 3, "b": -2.5, "c": True, "d": None, "e": [0, 64, 128], "f": "hello", "g": 1e-3, "h": []}
    assert isinstance(opts["a"], int) and isinstance(opts["g"], float)


def test_commas_inside_brackets_do_not_split() -> None:
    assert split_spec("x:p=[1,2,3],q=4") == ("x", {"p": [1, 2, 3], "q": 4})
    assert parse_value("[[1,2],[3]]") == [[1, 2], [3]]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty spec"),
        (":a=1", "no name"),
        ("x:", "gives no options"),
        ("x:a", "not of the form option=value"),
        ("x:a=1,a=2", "sets option 'a' twice"),
        ("x:a=[1,2", "unclosed '['"),
        ("x:a=1]", "unmatched ']'"),
    ],
)
def test_malformed_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        split_spec(spec)


def test_options_are_converted_to_their_type_hints(configurable: str) -> None:
    module = create_attention(
        f"{configurable}:radius=7,ratio=2,flag=true,mode=b,positions=[0,5],label=12,limit=none", head_dim=4, num_heads=2
    )
    assert module.options == {
        "radius": 7,
        "ratio": 2.0,
        "flag": True,
        "mode": "b",
        "positions": [0, 5],
        "label": "12",
        "limit": None,
    }
    assert isinstance(module.options["ratio"], float)
    assert module.spec == f"{configurable}:flag=true,label=12,mode=b,positions=[0,5],radius=7,ratio=2.0"


def test_canonical_spec_drops_defaults_and_sorts(configurable: str) -> None:
    assert canonical_spec(f"{configurable}:radius=4,ratio=0.5") == configurable
    assert canonical_spec(f"{configurable}:ratio=1,radius=5") == f"{configurable}:radius=5,ratio=1.0"
    assert canonical_spec(f"  {configurable}:radius=5 ") == f"{configurable}:radius=5"


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("radius=1.5", "expected int, got 1.5"),
        ("radius=true", "expected int, got true"),
        ("flag=1", "expected bool, got 1"),
        ("mode=c", "expected one of a, b, got c"),
        ("positions=[1,x]", "expected list[int] | none"),
        ("limit=abc", "expected int | none, got abc"),
    ],
)
def test_wrong_value_types_list_the_options(configurable: str, option: str, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        create_attention(f"{configurable}:{option}", head_dim=4, num_heads=1)
    message = str(err.value)
    assert expected in message
    assert "radius: int (default 4)" in message and "mode: a | b (default a)" in message


def test_unknown_option_lists_options_with_types_and_defaults(configurable: str) -> None:
    with pytest.raises(SpecError) as err:
        create_attention(f"{configurable}:radious=3", head_dim=4, num_heads=1)
    message = str(err.value)
    assert "no option 'radious'" in message
    for described in (
        "radius: int (default 4)",
        "ratio: float (default 0.5)",
        "flag: bool (default false)",
        "positions: list[int] | none (default none)",
    ):
        assert described in message


def test_unknown_name_suggests_close_matches_and_lists_all() -> None:
    with pytest.raises(SpecError) as err:
        create_attention("softmx", head_dim=4, num_heads=1)
    message = str(err.value)
    assert "unknown attention 'softmx'" in message
    assert "Did you mean 'softmax'" in message
    assert "Known: " + ", ".join(available_attention()) in message


def test_constructor_errors_become_spec_errors_naming_the_spec(configurable: str) -> None:
    with pytest.raises(SpecError, match=r"cfg-test:radius=-1.*radius must be >= 0"):
        create_attention(f"{configurable}:radius=-1", head_dim=4, num_heads=1)


def test_duplicate_name_names_both_classes(scratch_registry: None) -> None:
    @register_attention("dup-test")
    class First(_Configurable):
        pass

    class Second(_Configurable):
        pass

    with pytest.raises(ValueError, match=r"already registered to .*First; cannot register .*Second"):
        register_attention("dup-test")(Second)
    register_attention("dup-test")(First)  # the same class again is a no-op
    assert ATTENTION.get("dup-test") is First


def test_registration_rejects_bad_names_and_classes(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="not valid"):
        register_attention("bad:name")
    with pytest.raises(TypeError, match="not a subclass of Attention"):
        register_attention("not-attention")(dict)  # type: ignore[arg-type]

    class Positional(Attention):
        def __init__(self, head_dim: int, num_heads: int, radius: int = 1) -> None:
            super().__init__(head_dim=head_dim, num_heads=num_heads)

    with pytest.raises(TypeError, match="must be keyword-only"):
        register_attention("positional-test")(Positional)


def test_options_of_reports_types_and_defaults() -> None:
    opts = options_of(_Configurable)
    assert list(opts) == ["radius", "ratio", "flag", "mode", "positions", "label", "limit"]
    assert opts["positions"].type_name == "list[int] | none"
    assert opts["radius"].default == 4


def test_available_attention_filters_by_family() -> None:
    assert available_attention("full") == ["softmax", "softmax-naive"]
    assert available_attention() == sorted(available_attention())
    assert available_attention("no-such-family") == []
