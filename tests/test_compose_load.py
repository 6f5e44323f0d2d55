"""The Compose file reader (steps/compose): finding, merging, interpolating, validating and
normalizing a file, and converting a service into run options. Pure logic: no root, no kernel."""
from __future__ import annotations

import json
import os
import textwrap

import pytest

from steps import BadInput
from steps.compose import convert
from steps.compose.load import load, normal_name
from steps.compose.render import duration_text
from steps.compose.values import duration, size
from steps.compose.variables import chain, interpolate, parse_dotenv

WEB_DB = """
name: MyApp
services:
  web:
    image: nginx:${NGINX_TAG:-1.27}
    command: nginx -g "daemon off;"
    ports:
      - 8080:80
      - "127.0.0.1:8443:443/udp"
    environment:
      DB_HOST: db
      DB_PASSWORD: ${DB_PASSWORD}
      PRICE: "$$5"
    env_file: ./web.env
    volumes:
      - ./html:/usr/share/nginx/html:ro
      - cache:/var/cache/nginx
    networks:
      front:
      back:
        aliases: [www]
    depends_on:
      db:
        condition: service_healthy
    restart: no
    healthcheck:
      test: curl -f http://localhost/
      interval: 1m30s
      timeout: 500ms
      retries: 3
    stop_grace_period: 20s
  db:
    image: postgres:16
    environment:
      - POSTGRES_PASSWORD=${DB_PASSWORD:?set DB_PASSWORD in .env}
    volumes:
      - type: volume
        source: pgdata
        target: /var/lib/postgresql/data
    networks: [back]
    mem_limit: 256m
    deploy:
      resources:
        limits: {cpus: "0.5", pids: 100}
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U postgres"]
      interval: 5s
networks:
  front: {}
  back:
    ipam:
      config:
        - subnet: 172.28.0.0/24
volumes:
  pgdata: {}
  cache: {}
"""


def write(directory, name: str, text: str) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


@pytest.fixture
def web_db(tmp_path):
    """The realistic file, its .env and web.env, in a directory named app."""
    app = tmp_path / "app"
    app.mkdir()
    write(app, "compose.yaml", WEB_DB)
    write(app, ".env", "# secrets\nDB_PASSWORD=s3cret # inline comment\nexport NGINX_TAG=\"1.27-alpine\"\n")
    write(app, "web.env", "WORKERS=4\nDB_HOST=from-file\n")
    return app


def project_of(directory, text: str, environ=None, **kwargs) -> dict:
    write(directory, "compose.yaml", text)
    return load(directory=str(directory), environ=environ or {}, **kwargs)


def service_of(tmp_path, body: str, extra: str = "", environ=None) -> dict:
    """The normalized service `s` of a one-service file (body: its keys besides image)."""
    text = "services:\n  s:\n    image: busybox\n" + textwrap.indent(textwrap.dedent(body), "    ") + extra
    return project_of(tmp_path, text, environ)["services"]["s"]


def refused(tmp_path, text: str, environ=None) -> str:
    with pytest.raises(BadInput) as e:
        project_of(tmp_path, text, environ)
    message = str(e.value)
    assert "\n" not in message
    return message


# --- the realistic file ---------------------------------------------------------------------

def test_web_db_normalized(web_db):
    p = load(directory=str(web_db), environ={})
    assert p["name"] == "myapp" and p["directory"] == str(web_db) and p["order"] == ["db", "web"]
    assert p["files"] == [str(web_db / "compose.yaml")]
    web, db = p["services"]["web"], p["services"]["db"]
    assert web["image"] == "nginx:1.27-alpine"
    assert web["command"] == ["nginx", "-g", "daemon off;"]
    assert web["environment"] == {"WORKERS": "4", "DB_HOST": "db", "DB_PASSWORD": "s3cret", "PRICE": "$5"}
    assert web["ports"] == [
        {"target": 80, "published": 8080, "host_ip": "", "protocol": "tcp", "mode": "ingress"},
        {"target": 443, "published": 8443, "host_ip": "127.0.0.1", "protocol": "udp", "mode": "ingress"}]
    assert web["volumes"] == [
        {"type": "bind", "source": str(web_db / "html"), "target": "/usr/share/nginx/html", "read_only": True},
        {"type": "volume", "source": "cache", "target": "/var/cache/nginx", "read_only": False}]
    assert web["networks"] == {"front": {"aliases": []}, "back": {"aliases": ["www"]}}
    assert web["depends_on"] == {"db": {"condition": "service_healthy", "required": True, "restart": False}}
    assert web["restart"] == "no"  # YAML 1.2, as Compose reads it: `no` is a string
    assert web["healthcheck"] == {"test": ["CMD-SHELL", "curl -f http://localhost/"], "interval": 90.0,
                                  "timeout": 0.5, "start_period": None, "retries": 3}
    assert web["stop_grace_period"] == 20.0
    assert (db["mem_limit"], db["cpus"], db["pids_limit"]) == (256 << 20, 0.5, 100)
    assert db["environment"] == {"POSTGRES_PASSWORD": "s3cret"}
    assert p["networks"]["back"] == {"name": "myapp_back", "external": False, "driver": "bridge",
                                     "subnet": "172.28.0.0/24", "labels": {}}
    assert p["volumes"]["pgdata"]["name"] == "myapp_pgdata"
    assert json.loads(json.dumps(p)) == p


def test_web_db_run_options(web_db):
    from steps.spec import RunOptions

    p = load(directory=str(web_db), environ={})
    web = convert.run_options(p, "web")
    assert web["name"] == "myapp-web-1" and web["image"] == "nginx:1.27-alpine"
    assert web["env"] == ["WORKERS=4", "DB_HOST=db", "DB_PASSWORD=s3cret", "PRICE=$5"]
    assert web["publish"] == ["8080:80/tcp", "127.0.0.1:8443:443/udp"]
    assert web["volume"] == [f"{web_db}/html:/usr/share/nginx/html:ro", "myapp_cache:/var/cache/nginx"]
    assert web["networks"] == {"myapp_front": ["web"], "myapp_back": ["web", "www"]}
    assert web["label"] == ["com.docker.compose.project=myapp", "com.docker.compose.service=web",
                            "com.docker.compose.container-number=1", "com.docker.compose.oneoff=False"]
    assert web["restart"] == "no" and web["healthcheck"]["interval"] == 90.0
    db = convert.run_options(p, "db")
    assert (db["memory"], db["cpus"], db["pids_limit"]) == (str(256 << 20), "0.5", 100)
    assert db["volume"] == ["myapp_pgdata:/var/lib/postgresql/data"] and db["command"] == []
    kwargs, extra = convert.split(db)
    RunOptions(**kwargs)  # every other key is a RunOptions field
    assert set(extra) == set(convert.EXTRA_KEYS)


def test_environment_wins_over_process_then_dotenv(web_db):
    p = load(directory=str(web_db), environ={"DB_PASSWORD": "from-shell", "NGINX_TAG": "1"})
    assert p["services"]["web"]["environment"]["DB_PASSWORD"] == "from-shell"
    assert p["services"]["web"]["image"] == "nginx:1"


def test_dump_reads_back_the_same(web_db, tmp_path):
    p = load(directory=str(web_db), environ={})
    text = convert.dump(p)
    assert "interval: 1m30s" in text and "PRICE: $$5" in text
    again_dir = tmp_path / "again"
    again_dir.mkdir()
    again = project_of(again_dir, text)
    assert again["services"] == {n: {**s, "env_file": []} for n, s in p["services"].items()}
    assert again["networks"] == p["networks"] and again["volumes"] == p["volumes"]


# --- interpolation and .env -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("$SET", "v"), ("${SET}", "v"), ("a${SET}b$SET.c", "avbv.c"), ("$$SET", "$SET"), ("$${SET}", "${SET}"),
    ("${UNSET:-d}", "d"), ("${EMPTY:-d}", "d"), ("${EMPTY-d}", ""), ("${UNSET-d}", "d"),
    ("${SET:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("${UNSET:-${SET}}", "v"), ("${UNSET:-${UNSET2:-deep}}", "deep"), ("${SET:-${UNDEFINED}}", "v"),
    ("${SET?boom}", "v"), ("${EMPTY?boom}", ""), ("no dollars", "no dollars")])
def test_interpolation(text, expected):
    assert interpolate(text, chain({"SET": "v", "EMPTY": ""}), "here") == expected


@pytest.mark.parametrize("text, words", [
    ("${UNSET}", ["undefined variable UNSET in here", "${UNSET:-value}"]),
    ("$UNSET", ["undefined variable UNSET"]),
    ("${UNSET:?please set it}", ["required variable UNSET", "please set it"]),
    ("${EMPTY:?}", ["required variable EMPTY"]), ("${UNSET?x}", ["required variable UNSET"]),
    ("${SET", ["invalid interpolation format"]), ("$1", ["invalid interpolation format"]),
    ("cost $", ["invalid interpolation format"]), ("${SET/a/b}", ["invalid interpolation format"])])
def test_interpolation_refused(text, words):
    with pytest.raises(BadInput) as e:
        interpolate(text, chain({"SET": "v", "EMPTY": ""}), "here")
    for word in words:
        assert word in str(e.value)


def test_undefined_variable_names_where(tmp_path):
    message = refused(tmp_path, "services:\n  web:\n    image: busybox\n    environment:\n      A: ${NOPE}\n")
    assert message.startswith("undefined variable NOPE in services.web.environment.A in compose.yaml")


def test_keys_are_not_interpolated(tmp_path):
    s = service_of(tmp_path, "labels:\n  $KEY: x\n")
    assert s["labels"] == {"$KEY": "x"}


def test_dotenv_format():
    text = ("# comment\n\nA=1\nexport B = two \nC='single $A # kept'\nD=\"double ${A}\\n\\\"q\\\"\"\n"
            "E=plain $A # comment\nF=\nBARE\nG=\"x\" # after\n")
    out = parse_dotenv(text, ".env", chain({"BARE": "from-env"}))
    assert out == {"A": "1", "B": "two", "C": "single $A # kept", "D": 'double 1\n"q"', "E": "plain 1",
                   "F": "", "BARE": "from-env", "G": "x"}


@pytest.mark.parametrize("text", ["1A=x", "A='open", 'A="x" y'])
def test_dotenv_refused(text):
    with pytest.raises(BadInput) as e:
        parse_dotenv(text, ".env", chain({}))
    assert ".env line 1" in str(e.value)


# --- project name and files ------------------------------------------------------------------

def test_project_name_rules(tmp_path):
    d = tmp_path / "My Project.v2"
    d.mkdir()
    text = "services:\n  s:\n    image: busybox\n"
    assert project_of(d, text)["name"] == "myprojectv2"  # the directory, normalized
    assert project_of(d, "name: Stack_1\n" + text)["name"] == "stack_1"  # name:, normalized
    assert project_of(d, "name: a\n" + text, {"COMPOSE_PROJECT_NAME": "env-name"})["name"] == "env-name"
    assert project_of(d, "name: a\n" + text, {"COMPOSE_PROJECT_NAME": "e"}, project_name="given")["name"] == "given"
    write(d, ".env", "COMPOSE_PROJECT_NAME=from-dotenv\n")
    assert project_of(d, text)["name"] == "from-dotenv"
    with pytest.raises(BadInput, match=r"bad project name 'Bad Name'.*e\.g\. badname"):
        project_of(d, text, project_name="Bad Name")
    with pytest.raises(BadInput, match="bad project name '_x'"):
        project_of(d, text, project_name="_x")
    assert normal_name("-_Ab.C-d") == "abc-d"


def test_file_search_order(tmp_path):
    write(tmp_path, "docker-compose.yml", "services:\n  old:\n    image: busybox\n")
    assert list(load(directory=str(tmp_path), environ={})["services"]) == ["old"]
    write(tmp_path, "compose.yml", "services:\n  yml:\n    image: busybox\n")
    assert list(load(directory=str(tmp_path), environ={})["services"]) == ["yml"]
    write(tmp_path, "compose.yaml", "services:\n  yaml:\n    image: busybox\n")
    assert list(load(directory=str(tmp_path), environ={})["services"]) == ["yaml"]
    write(tmp_path, "compose.override.yaml", "services:\n  extra:\n    image: busybox\n")
    assert list(load(directory=str(tmp_path), environ={})["services"]) == ["yaml", "extra"]


def test_no_file(tmp_path):
    with pytest.raises(BadInput, match="no compose file in .*compose.yaml, compose.yml"):
        load(directory=str(tmp_path), environ={})
    with pytest.raises(BadInput, match="cannot read compose file .*nope.yaml: no such file"):
        load(files=[str(tmp_path / "nope.yaml")], environ={})


def test_merge_of_several_files(tmp_path):
    base = write(tmp_path, "base.yaml", """
        services:
          web:
            image: nginx:1
            command: ["echo", "base"]
            environment: {A: "1", B: "1"}
            labels: ["x=1"]
            ports: ["8080:80", "9090:90"]
            volumes: ["data:/data", "logs:/logs"]
            cap_add: [NET_ADMIN]
            healthcheck: {test: ["CMD", "true"], interval: 10s}
        volumes: {data: {}, logs: {}}
        """)
    over = write(tmp_path, "over.yaml", """
        services:
          web:
            image: nginx:2
            command: ["echo", "over"]
            environment: ["B=2", "C=3"]
            labels: {y: "2"}
            ports: ["8080:80", "7070:70"]
            volumes: ["other:/data:ro"]
            cap_add: [SYS_TIME]
            healthcheck: {test: ["CMD", "false"]}
        volumes: {other: {}}
        """)
    p = load(files=[base, over], environ={})
    web = p["services"]["web"]
    assert p["files"] == [base, over] and p["directory"] == str(tmp_path)
    assert web["image"] == "nginx:2" and web["command"] == ["echo", "over"]
    assert web["environment"] == {"A": "1", "B": "2", "C": "3"}
    assert web["labels"] == {"x": "1", "y": "2"}
    assert [(x["published"], x["target"]) for x in web["ports"]] == [(9090, 90), (8080, 80), (7070, 70)]
    assert [(x["source"], x["target"], x["read_only"]) for x in web["volumes"]] == [
        ("logs", "/logs", False), ("other", "/data", True)]
    assert web["cap_add"] == ["NET_ADMIN", "SYS_TIME"]
    assert web["healthcheck"]["test"] == ["CMD", "false"] and web["healthcheck"]["interval"] == 10.0
    assert set(p["volumes"]) == {"data", "logs", "other"}


# --- each supported key, normalized ----------------------------------------------------------

def test_command_and_entrypoint_forms(tmp_path):
    s = service_of(tmp_path, "command: sh -c 'echo \"a b\"'\nentrypoint: [\"/bin/tini\", \"--\"]\n")
    assert s["command"] == ["sh", "-c", 'echo "a b"'] and s["entrypoint"] == ["/bin/tini", "--"]
    opts = convert.run_options(project_of(tmp_path, "services:\n  s:\n    image: b\n    entrypoint: /e -x y\n"), "s")
    assert (opts["entrypoint"], opts["entrypoint_args"]) == ("/e", ["-x", "y"])
    opts = convert.run_options(project_of(tmp_path, "services:\n  s:\n    image: b\n    entrypoint: []\n"), "s")
    assert (opts["entrypoint"], opts["entrypoint_args"]) == ("", [])


def test_environment_forms(tmp_path):
    s = service_of(tmp_path, "environment: [A=1, B, C=, D=x=y]\n", environ={"B": "from-env"})
    assert s["environment"] == {"A": "1", "B": "from-env", "C": "", "D": "x=y"}
    s = service_of(tmp_path, "environment: {N: 1, T: true, Z: null, F: 1.5}\n")
    assert s["environment"] == {"N": "1", "T": "true", "F": "1.5"}  # a bare Z, unset here: dropped


def test_env_file_forms(tmp_path):
    write(tmp_path, "a.env", "A=1\nB=1\n")
    write(tmp_path, "b.env", "B=2\n")
    s = service_of(tmp_path, "env_file: [a.env, {path: ./b.env}, {path: missing.env, required: false}]\n"
                   "environment: {C: 3}\n")
    assert s["environment"] == {"A": "1", "B": "2", "C": "3"}
    assert s["env_file"][2] == {"path": str(tmp_path / "missing.env"), "required": False}
    message = refused(tmp_path, "services:\n  s:\n    image: b\n    env_file: nothing.env\n")
    assert "env file" in message and "nothing.env not found" in message


def test_port_forms(tmp_path):
    s = service_of(tmp_path, "ports: [80, '8080:80', '127.0.0.1::53/udp', "
                   "{target: 443, published: '8443', host_ip: 127.0.0.1, protocol: tcp, mode: host}]\n")
    assert [convert.publish(p) for p in s["ports"]] == ["80/tcp", "8080:80/tcp", "127.0.0.1::53/udp",
                                                        "127.0.0.1:8443:443/tcp"]


def test_volume_forms(tmp_path):
    s = service_of(tmp_path, """
        volumes:
          - /anon
          - ../up:/up
          - /abs:/abs:rw
          - {type: bind, source: ./b, target: /b, read_only: true}
          - {type: tmpfs, target: /scratch, tmpfs: {size: 64m}}
          - {type: volume, source: named, target: /n}
        tmpfs: [/run, "/tmp:size=1m"]
        """, extra="volumes:\n  named: {name: shared-data}\n")
    p = project_of(tmp_path, open(tmp_path / "compose.yaml").read())
    assert s["volumes"][1] == {"type": "bind", "source": str(tmp_path.parent / "up"), "target": "/up",
                               "read_only": False}
    opts = convert.run_options(p, "s")
    assert opts["volume"] == ["/anon", f"{tmp_path.parent}/up:/up", "/abs:/abs", f"{tmp_path}/b:/b:ro",
                              "shared-data:/n"]
    assert opts["mount"] == [f"type=tmpfs,target=/scratch,tmpfs-size={64 << 20}"]
    assert opts["tmpfs"] == ["/run", "/tmp:size=1m"]


def test_networks_and_external(tmp_path):
    p = project_of(tmp_path, """
        services:
          a: {image: b}
          b: {image: b, networks: {n1: {aliases: [bee, b]}, ext: null}}
        networks:
          n1: {name: custom, labels: [k=v]}
          ext: {external: true}
        """)
    assert convert.run_options(p, "a")["networks"] == {f"{p['name']}_default": ["a"]}
    assert convert.run_options(p, "b")["networks"] == {"custom": ["b", "bee"], "ext": ["b"]}
    assert p["networks"]["n1"]["labels"] == {"k": "v"} and p["networks"]["ext"]["external"] is True
    assert p["networks"]["default"]["name"] == f"{p['name']}_default"


def test_scalars_limits_labels_healthcheck(tmp_path):
    s = service_of(tmp_path, """
        user: "1000:1000"
        working_dir: /srv
        hostname: web1
        init: true
        read_only: true
        cap_add: [NET_ADMIN]
        cap_drop: [ALL]
        mem_limit: 1gb
        cpus: 2
        pids_limit: -1
        labels: {team: web, n: 1}
        stop_signal: SIGUSR1
        stop_grace_period: 1m
        restart: on-failure:3
        healthcheck: {disable: true}
        """)
    assert (s["user"], s["working_dir"], s["hostname"], s["init"], s["read_only"]) == (
        "1000:1000", "/srv", "web1", True, True)
    assert (s["mem_limit"], s["cpus"], s["pids_limit"]) == (1 << 30, 2.0, None)
    assert s["labels"] == {"team": "web", "n": "1"} and s["stop_grace_period"] == 60.0
    assert s["restart"] == "on-failure:3" and s["healthcheck"]["test"] == ["NONE"]
    assert service_of(tmp_path, "healthcheck: {test: [CMD, curl, -f, x]}\n")["healthcheck"]["test"] == [
        "CMD", "curl", "-f", "x"]


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600),
                                           ("1.5s", 1.5), ("0", 0), ("2m3s4ms", 123.004)])
def test_durations(text, seconds):
    assert duration(text, "x") == seconds
    assert duration(duration_text(seconds), "x") == seconds


def test_sizes():
    assert [size(x, "x") for x in ("2b", "1024kb", "300m", "1gb", 4096, "1g")] == [
        2, 1 << 20, 300 << 20, 1 << 30, 4096, 1 << 30]


def test_order_dependencies_first(tmp_path):
    p = project_of(tmp_path, """
        services:
          web: {image: b, depends_on: [api, cache]}
          api: {image: b, depends_on: {db: {condition: service_completed_successfully, required: false}}}
          db: {image: b}
          cache: {image: b}
        """)
    assert p["order"] == ["db", "api", "cache", "web"]  # depth first, ties by name
    for i, name in enumerate(p["order"]):
        assert set(p["services"][name]["depends_on"]) <= set(p["order"][:i])
    assert p["services"]["api"]["depends_on"]["db"] == {"condition": "service_completed_successfully",
                                                        "required": False, "restart": False}


# --- refusals, one line each ----------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("services:\n  web:\n    image: b\n    build: .\n",
     "unsupported key services.web.build (diy-docker runs images; build them first)"),
    ("secrets: {}\nservices:\n  web: {image: b}\n", "unsupported key secrets ("),
    ("services:\n  web:\n    image: b\n    deploy: {replicas: 2}\n", "unsupported key services.web.deploy.replicas"),
    ("services:\n  web:\n    image: b\n    deploy: {resources: {limits: {memory: 1g, devices: []}}}\n",
     "unsupported key services.web.deploy.resources.limits.devices"),
    ("services:\n  web:\n    image: b\n    healthcheck: {test: x, start_interval: 1s}\n",
     "unsupported key services.web.healthcheck.start_interval"),
    ("services:\n  web:\n    image: b\n    ports: [{target: 80, app_protocol: http}]\n",
     "unsupported key services.web.ports[0].app_protocol"),
    ("services:\n  web:\n    image: b\n    volumes: [{type: bind, source: /, target: /x, bind: {}}]\n",
     "unsupported key services.web.volumes[0].bind"),
    ("services:\n  web:\n    image: b\n    networks: {n: {ipv4_address: 1.2.3.4}}\nnetworks: {n: {}}\n",
     "unsupported key services.web.networks.n.ipv4_address"),
    ("services:\n  web: {image: b}\nnetworks: {n: {driver_opts: {}}}\n", "unsupported key networks.n.driver_opts"),
    ("services:\n  web: {image: b}\nnetworks: {n: {ipam: {driver: default}}}\n",
     "unsupported key networks.n.ipam.driver"),
    ("services:\n  web: {image: b}\nvolumes: {v: {driver_opts: {}}}\n", "unsupported key volumes.v.driver_opts"),
    ("services:\n  web:\n    command: x\n", "bad services.web: image is missing"),
    ("services:\n  a: {image: b, depends_on: [b]}\n  b: {image: b, depends_on: [c]}\n"
     "  c: {image: b, depends_on: [a]}\n",
     "dependency cycle a -> b -> c -> a"),
    ("services:\n  web: {image: b, depends_on: [web]}\n", "dependency cycle web -> web"),
    ("services:\n  web: {image: b, depends_on: [db]}\n", "service 'db' is not defined"),
    ("services:\n  web: {image: b, ports: ['8080:99999']}\n", "target '99999' must be a port number 1-65535"),
    ("services:\n  web: {image: b, ports: ['8000-8010:8000-8010']}\n", "port ranges are not supported"),
    ("services:\n  web: {image: b, ports: ['80/sctp']}\n", "protocol 'sctp' must be tcp or udp"),
    ("services:\n  web: {image: b, ports: ['1:2:3:4']}\n", "is not [[HOST_IP:]PUBLISHED:]TARGET"),
    ("services:\n  web: {image: b, ports: ['a:80']}\n", "published 'a' must be a port number"),
    ("services:\n  web: {image: b, ports: ['80:80', '80:81']}\n", "published port 80/tcp is given twice"),
    ("services:\n  web: {image: b, networks: [back]}\n", "network 'back' is not declared"),
    ("services:\n  web: {image: b, volumes: ['data:/d']}\n", "volume 'data' is not declared"),
    ("services:\n  web: {image: b}\nnetworks:\n  a: {ipam: {config: [{subnet: 10.1.0.0/16}]}}\n"
     "  b: {ipam: {config: [{subnet: 10.1.2.0/24}]}}\n", "bad networks: a (10.1.0.0/16) and b (10.1.2.0/24) overlap"),
    ("services:\n  web: {image: b}\nnetworks: {a: {ipam: {config: [{subnet: 10.1.0.1/16}]}}}\n",
     "is not an IPv4 subnet"),
    ("services:\n  web: {image: b}\nnetworks: {a: {driver: overlay}}\n", "'overlay' is not supported; use bridge"),
    ("services:\n  web: {image: b}\nnetworks: {a: {external: true, driver: bridge}}\n",
     "driver cannot be given with external: true"),
    ("services:\n  web: {image: b, stop_grace_period: 10}\n", "bad services.web.stop_grace_period: expected a string"),
    ("services:\n  web: {image: b, healthcheck: {interval: 10x}}\n", "'10x' is not a duration"),
    ("services:\n  web: {image: b, mem_limit: lots}\n", "'lots' is not a size"),
    ("services:\n  web: {image: b, restart: sometimes}\n", "'sometimes'; use no, always, on-failure[:N]"),
    ("services:\n  web: {image: b, user: 1000}\n", "bad services.web.user: expected a string, got a number 1000"),
    ("services:\n  web: {image: b, init: 'yes'}\n", "bad services.web.init: expected true or false"),
    ("services:\n  web: {image: 5}\n", "bad services.web.image: expected a string"),
    ("services:\n  web: {image: b, volumes: ['d:/d:z']}\nvolumes: {d: {}}\n", "mode 'z' is not supported"),
    ("services:\n  web: {image: b, volumes: ['d:rel']}\nvolumes: {d: {}}\n", "must be an absolute path"),
    ("services:\n  web: {image: b, volumes: ['/a:/x', '/b:/x']}\n", "target /x is given twice"),
    ("services:\n  web: {image: b, mem_limit: 1g, deploy: {resources: {limits: {memory: 2g}}}}\n",
     "mem_limit and deploy.resources.limits.memory differ"),
    ("services:\n  web: {image: b, healthcheck: {test: [CMD]}}\n", "bad services.web.healthcheck.test"),
    ("services:\n  web: {image: b, depends_on: {x: {condition: started}}}\n  x: {image: b}\n",
     "'started'; use service_started"),
    ("services:\n  web: {image: b, command: \"echo 'unclosed\"}\n", "cannot be split into words"),
    ("services: {}\n", "no services"),
    ("services:\n  web: {image: b, tmpfs: ['/run:bogus']}\n", "bad services.web.tmpfs[0]"),
    ("services: [web]\n", "bad services: expected a mapping"),
    ("services:\n  web: {image: b}\n  bad one: {image: b}\n", "bad service name 'bad one'"),
    ("services:\n  web: {image: b\n", "cannot read compose file"),
    ("services:\n  web: {image: b, command: !reset []}\n", "cannot read compose file"),
])
def test_refused_in_one_line(tmp_path, text, expected):
    assert expected in refused(tmp_path, text)


def test_extension_keys_and_version_accepted(tmp_path):
    p = project_of(tmp_path, """
        version: "3.9"
        x-common: &common {restart: always}
        services:
          web:
            <<: *common
            image: b
            x-note: ignored, as the spec says
        """)
    assert p["services"]["web"]["restart"] == "always" and "x-note" not in p["services"]["web"]


# --- config hash -----------------------------------------------------------------------------

def test_config_hash_stable_across_key_order(tmp_path):
    a = project_of(tmp_path, "services:\n  web:\n    image: b\n    environment: {A: 1, B: 2}\n"
                   "    labels: [x=1, y=2]\n    ports: ['1:1', '2:2']\n  db: {image: p}\n")
    b = project_of(tmp_path, "services:\n  db: {image: p}\n  web:\n    ports: ['2:2', '1:1']\n"
                   "    labels: [y=2, x=1]\n    environment: {B: 2, A: 1}\n    image: b\n")
    assert convert.config_hash(a, "web") == convert.config_hash(b, "web")
    assert len(convert.config_hash(a, "web")) == 64


def test_config_hash_changes_with_one_services_environment(tmp_path):
    text = "services:\n  web:\n    image: b\n    environment: {A: '%s'}\n  db: {image: p}\n"
    one, two = project_of(tmp_path, text % "1"), project_of(tmp_path, text % "2")
    assert convert.config_hash(one, "web") != convert.config_hash(two, "web")
    assert convert.config_hash(one, "db") == convert.config_hash(two, "db")


def test_config_hash_follows_env_file_content_and_networks(tmp_path):
    write(tmp_path, "w.env", "A=1\n")
    text = "services:\n  web: {image: b, env_file: w.env, networks: [n]}\nnetworks: {n: {%s}}\n"
    before = convert.config_hash(project_of(tmp_path, text % ""), "web")
    write(tmp_path, "w.env", "A=2\n")
    after = convert.config_hash(project_of(tmp_path, text % ""), "web")
    assert before != after
    subnet = convert.config_hash(project_of(tmp_path, text % "ipam: {config: [{subnet: 10.9.0.0/24}]}"), "web")
    assert subnet != after


def test_unknown_service(web_db):
    with pytest.raises(BadInput, match="no such service: nope"):
        convert.run_options(load(directory=str(web_db), environ={}), "nope")
