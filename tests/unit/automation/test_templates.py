"""Templates in the Jinja2 sandbox: strict variables, escaped HTML, no way to Python internals."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.automation.templates import TemplateIn, render, render_string
from shared.errors import Unprocessable


def test_text_and_html_render_and_html_is_escaped():
    template = TemplateIn(subject="Offer {{ n }}", text="Hi {{ who }}", html="<p>{{ who }}</p>")
    out = render(template, {"n": 3, "who": "<script>x</script>"})
    assert out.subject == "Offer 3" and out.text == "Hi <script>x</script>"
    assert out.html == "<p>&lt;script&gt;x&lt;/script&gt;</p>"


def test_loops_filters_and_nested_data_work():
    text = "{% for i in items %}{{ i.name | upper }}={{ '%.2f' | format(i.price) }};{% endfor %}"
    assert render_string(text, {"items": [{"name": "a", "price": 1.5}, {"name": "b", "price": 2}]}) == \
        "A=1.50;B=2.00;"


@pytest.mark.parametrize("source,code", [
    ("{{ missing }}", "template_undefined_variable"),
    ("{{ data.missing.deeper }}", "template_undefined_variable"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "template_unsafe"),
    ("{{ lipsum.__globals__['os'].system('id') }}", "template_unsafe"),
    ("{% set x = [].append(1) %}", "template_unsafe"),
    ("{{ 1 / 0 }}", "template_render_failed"),
    ("{{ 'a' * 10**9 }}", "template_unsafe"),
    ("{{ 'ab' * 60000 }}", "template_unsafe"),
    ("{{ [1] * 200000 }}", "template_unsafe"),
    ("{% if %}", "template_syntax_error"),
])
def test_bad_templates_are_unprocessable(source, code):
    with pytest.raises(Unprocessable) as caught:
        render_string(source, {"data": {}})
    assert caught.value.code == code


def test_a_template_without_a_body_or_with_a_syntax_error_is_refused_when_saved():
    with pytest.raises(ValidationError):
        TemplateIn(subject="only a subject")
    with pytest.raises(Unprocessable):
        TemplateIn(text="{% for %}")


def test_small_repeats_and_powers_still_work_and_subjects_become_one_line():
    assert render_string("{{ '-' * 10 }}{{ 2 ** 10 }}", {}) == "----------1024"
    out = render(TemplateIn(subject="Re: {{ t }}", text="x"), {"t": "line one\nline two"})
    assert out.subject == "Re: line one line two"


def test_event_text_in_a_template_variable_is_data_not_template_code():
    out = render(TemplateIn(text="{{ q }}", html="<p>{{ q }}</p>"), {"q": "{{ 7*7 }} <a href=x>"})
    assert out.text == "{{ 7*7 }} <a href=x>" and out.html == "<p>{{ 7*7 }} &lt;a href=x&gt;</p>"
