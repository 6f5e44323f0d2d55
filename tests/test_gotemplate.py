"""Pure logic: Go templates for --format, Docker's time/size columns, stats file parsers."""
from __future__ import annotations

import pytest

from steps.cli.columns import human_duration, human_size, parse_time, render, since, tabwrite
from steps.cli.gofuncs import TemplateError, go_str
from steps.cli.gotemplate import parse

DATA = {"Id": "abc123", "Name": "/web", "Args": ["-c", "echo hi"],
        "State": {"Pid": 42, "Running": True, "ExitCode": 0, "Status": "running"},
        "Config": {"Labels": {"k": "v", "a": "b"}, "Env": ["A=1", "B=2"], "Entrypoint": None, "Cmd": ["sh"]},
        "Mounts": [{"Source": "/a", "RW": True}, {"Source": "/b", "RW": False}],
        "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}}}


@pytest.mark.parametrize("template,out", [
    ("{{.State.Pid}}", "42"),
    ("{{.Name}}", "/web"),
    ("{{.Id}}", "abc123"),
    ("{{json .Config}}", '{"Labels":{"k":"v","a":"b"},"Env":["A=1","B=2"],"Entrypoint":null,"Cmd":["sh"]}'),
    ('{{index .Config.Labels "k"}}', "v"),
    ('{{index .Config.Labels "missing"}}', "<no value>"),
    ("{{range .Mounts}}{{.Source}} {{end}}", "/a /b "),
    ("{{if .State.Running}}yes{{else}}no{{end}}", "yes"),
    ("{{if not .State.Running}}a{{else if .Name}}b{{else}}c{{end}}", "b"),
    ("{{lower .State.Status}}/{{upper .State.Status}}", "running/RUNNING"),
    ('{{join .Args ","}}', "-c,echo hi"),
    ('{{printf "%s has %d" .Name .State.Pid}}', "/web has 42"),
    ('{{.Name | printf "%q"}}', '"/web"'),
    ("{{.Nope}}", "<no value>"),
    ("{{.Config.Nope.Deeper}}", "<no value>"),
    ("{{.Config.Entrypoint}}", "<nil>"),
    ("{{.Config.Labels}}", "map[a:b k:v]"),
    ("{{.Config.Env}}", "[A=1 B=2]"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", "a=b;k=v;"),
    ("{{range $i, $m := .Mounts}}{{$i}}:{{$m.RW}} {{end}}", "0:true 1:false "),
    ("{{range .Nope}}x{{else}}empty{{end}}", "empty"),
    ("{{with .State}}{{.Pid}}{{end}}", "42"),
    ("{{with .Nope}}x{{else}}none{{end}}", "none"),
    ("{{$n := .Name}}{{$n}}!", "/web!"),
    ('{{if eq .State.Status "exited" "running"}}up{{end}}', "up"),
    ("{{if and .State.Running (eq .State.ExitCode 0)}}ok{{end}}", "ok"),
    ("{{len .Mounts}} {{len .Config.Labels}}", "2 2"),
    ("{{(index .Mounts 1).Source}}", "/b"),
    ('{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}', "8080"),
    ("{{range $p, $b := .NetworkSettings.Ports}}{{$p}} -> {{(index $b 0).HostPort}}{{end}}", "80/tcp -> 8080"),
    ("{{- .Name -}}  \n  x", "/webx"),
    ("a {{/* a comment */}}b", "a b"),
    ('{{split "a:b:c" ":"}}', "[a b c]"),
    ('{{title "hello world"}} {{truncate .Id 3}}', "Hello World abc"),
    ("{{println .Name}}", "/web\n"),
    ('{{print "a" 1 2 "b"}}', "a1 2b"),
    ("{{.State}}", "map[ExitCode:0 Pid:42 Running:true Status:running]"),
    ("plain text", "plain text"),
])
def test_templates_render_as_go_does(template, out):
    assert parse(template).render(DATA) == out


@pytest.mark.parametrize("template,why", [
    ("{{.Name", "unclosed action"),
    ("{{if .Name}}x", "missing {{end}}"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{nofunc .Name}}", 'function "nofunc" not defined'),
    ("{{.Name |}}", "missing value"),
    ("{{.Name)}}", "unexpected"),
])
def test_a_bad_template_is_one_line(template, why):
    with pytest.raises(TemplateError) as e:
        parse(template)
    assert why in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("bad format")


def test_errors_while_running_are_one_line():
    with pytest.raises(TemplateError) as e:
        parse("{{index .Args 5}}").render(DATA)
    assert "index out of range" in str(e.value)
    with pytest.raises(TemplateError):
        parse("{{.Name.Deeper}}").render(DATA)


def test_methods_take_arguments():
    row = {"Label": lambda k: {"tier": "web"}.get(k, "")}
    assert parse('{{.Label "tier"}}|{{.Label "x"}}').render(row) == "web|"


def test_go_printing_of_values():
    assert go_str(1e6) == "1e+06" and go_str(123456.0) == "123456" and go_str(0.5) == "0.5"
    assert go_str(True) == "true" and go_str([1, [2, 3]]) == "[1 [2 3]]" and go_str({}) == "map[]"


def test_times_with_fractions_and_offsets():
    assert parse_time("2024-05-01T10:00:00Z") == 1714557600
    assert parse_time("2024-05-01T10:00:00.123456789Z") == pytest.approx(1714557600.123456789)
    assert parse_time("2024-05-01T12:00:00+02:00") == 1714557600
    assert parse_time("garbage") is None and parse_time(None) is None
    assert since("2024-05-01T10:00:00.5Z", now=1714557600.5 + 125) == "2 minutes ago"


@pytest.mark.parametrize("seconds,text", [
    (0.2, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3600, "About an hour"), (5 * 3600, "5 hours"),
    (3 * 86400, "3 days"), (20 * 86400, "2 weeks"), (90 * 86400, "3 months"), (800 * 86400, "2 years"),
])
def test_human_durations_are_go_units(seconds, text):
    assert human_duration(seconds) == text


def test_sizes():
    assert human_size(1990000) == "1.99MB" and human_size(512) == "512B" and human_size(77_900_000) == "77.9MB"
    assert human_size(64 << 20, binary=True) == "64MiB" and human_size(237568, binary=True) == "232KiB"


def test_table_header_and_alignment():
    rows = [{"ID": "0123456789ab", "Names": "web"}, {"ID": "ba9876543210", "Names": "a-much-longer-name"}]
    lines = render(rows, "table {{.ID}}\\t{{.Names}}", {"ID": "CONTAINER ID", "Names": "NAMES"})
    assert lines == ["CONTAINER ID   NAMES", "0123456789ab   web", "ba9876543210   a-much-longer-name"]
    assert render(rows, "{{.Names}}", {}) == ["web", "a-much-longer-name"]
    assert render(rows[:1], "json", {}) == ['{"ID":"0123456789ab","Names":"web"}']
    assert tabwrite(["a\tb", "ccc\td"]) == ["a         b", "ccc       d"]  # minwidth 10


def test_stats_parsers():
    from steps.cli.stats import parse_io_v1, parse_io_v2

    assert parse_io_v2("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2\n8:16 rbytes=1 wbytes=0\n") == (4097, 8192)
    v1 = "8:0 Read 100\n8:0 Write 50\n8:0 Sync 0\n8:0 Total 150\nTotal 150\n"
    assert parse_io_v1(v1) == (100, 50)
