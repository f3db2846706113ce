import json

from spot_rebalancer.telemetry import MetricsRecorder


def test_publish_prints_one_emf_document_per_dimension_set(capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "spot-rebalancer")
    recorder = MetricsRecorder()
    recorder.add("PodsEvicted", 3, ClusterName="prod")
    recorder.add("PodsEvicted", 2, ClusterName="prod")
    recorder.add("Nodes", 5, ClusterName="prod", CapacityType="spot", Architecture="arm64")
    assert recorder.total("PodsEvicted") == 5
    assert recorder.total("Nodes", CapacityType="spot") == 5
    assert recorder.total("Nodes", CapacityType="on-demand") == 0
    recorder.publish()
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(documents) == 2
    evicted, nodes = documents
    directive = evicted["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "SpotRebalancer"
    assert directive["Dimensions"] == [["ClusterName"]], "no service dimension: alarms use these"
    assert evicted["PodsEvicted"] == [3.0, 2.0]
    assert nodes["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["Architecture", "CapacityType", "ClusterName"]]
    assert recorder.points == []
