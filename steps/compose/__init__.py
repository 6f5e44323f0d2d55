"""Compose files (issue 12): read, merged, interpolated, validated and normalized into a plain
project dict, then converted into the run options of each service's container. Pure logic: no
kernel object is touched here.

    load.py       find the files, .env, project name, merge (then model.normalize)
    variables.py  interpolation and the dotenv format
    model.py      the project: top-level networks and volumes, references, dependency order
    service.py    one service's keys (options.py: networks, depends_on, restart, healthcheck, limits)
    values.py     durations, sizes, ports, volume mounts, scalar checks
    convert.py    run_options(), config_hash(), dump() (render.py: the file form)

Usage: project = load.load(files, project_name); convert.run_options(project, service) for each
service of project["order"].
"""
