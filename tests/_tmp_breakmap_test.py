import pytest
from tests.test_iam import policy, without, run_paths
@pytest.mark.parametrize("function", ["api_handler", "resize"])
def test_map(function, monkeypatch):
    doc = policy("dev", function)
    for i, st in enumerate(doc["Statement"]):
        if st["Sid"] == "Logs": continue
        f = run_paths("dev", function, without(doc, i), monkeypatch)
        print(f"\n{function} -{st['Sid']}: " + "; ".join(f"{k} ({v[:70]})" for k, v in f.items()))
