"""The official `openai` Python client against `trinity serve` (run by serve/tests/openai_client.rs).

Usage: python3 openai_client.py BASE_URL FIXTURE_DIR API_KEY
Checks completions and chat, whole and streamed, exact greedy tokens against the
fixture's transformers output, usage counts, and the client's error classes.
"""
import json
import sys

import openai
from openai import OpenAI


def main():
    base, fixture, key = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(f"{fixture}/expected.json") as f:
        exp = json.load(f)
    prompt, greedy = exp["prompt_ids"], exp["greedy_ids"]
    client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)

    assert [m.id for m in client.models.list().data] == ["tiny"]

    extra = {"return_token_ids": True}
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=len(greedy), temperature=0, extra_body=extra)
    ids = r.choices[0].token_ids
    assert ids and greedy[: len(ids)] == ids, (ids, greedy)
    assert r.usage.prompt_tokens == len(prompt) and r.usage.completion_tokens == len(ids), r.usage
    assert r.object == "text_completion" and r.choices[0].finish_reason in ("stop", "length")

    chunks = list(
        client.completions.create(
            model="tiny", prompt=prompt, max_tokens=len(greedy), temperature=0, stream=True, extra_body=extra
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    streamed = [t for c in chunks if c.choices for t in (getattr(c.choices[0], "token_ids", None) or [])]
    assert streamed == ids, (streamed, ids)
    assert text == r.choices[0].text, (text, r.choices[0].text)
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason

    r = client.completions.create(model="tiny", prompt="w1 w2 w3", max_tokens=4, temperature=0.7, top_p=0.9, seed=11)
    again = client.completions.create(model="tiny", prompt="w1 w2 w3", max_tokens=4, temperature=0.7, top_p=0.9, seed=11)
    assert r.choices[0].text == again.choices[0].text, "a seed repeats its sample"

    messages = [{"role": "system", "content": "w9"}, {"role": "user", "content": "w3 w4"}]
    c = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    assert c.object == "chat.completion" and c.choices[0].message.role == "assistant"
    content = c.choices[0].message.content
    parts, usage, finish = [], None, None
    for ch in client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=6, temperature=0, stream=True, stream_options={"include_usage": True}
    ):
        if ch.usage:
            usage = ch.usage
        if ch.choices:
            parts.append(ch.choices[0].delta.content or "")
            finish = ch.choices[0].finish_reason or finish
    assert "".join(parts) == content, (parts, content)
    assert usage is not None and usage.completion_tokens == c.usage.completion_tokens, (usage, c.usage)
    assert finish == c.choices[0].finish_reason

    def expect(error, call):
        try:
            call()
        except error as e:
            return e
        raise AssertionError(f"expected {error.__name__}")

    expect(openai.NotFoundError, lambda: client.completions.create(model="gpt-4", prompt=[1], max_tokens=1))
    e = expect(openai.BadRequestError, lambda: client.completions.create(model="tiny", prompt=[1] * 40, max_tokens=1))
    assert "context" in str(e), e
    wrong = OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
    expect(openai.AuthenticationError, lambda: wrong.completions.create(model="tiny", prompt=[1], max_tokens=1))
    print(f"openai {openai.__version__}: all checks passed")


if __name__ == "__main__":
    main()
