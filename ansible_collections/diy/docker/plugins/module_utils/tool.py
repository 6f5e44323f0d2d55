"""Calling the installed `diy-docker` on the target host: finding it, its instance env, its errors."""
import json
import os

# Where the README's install command puts the console script; not on root's PATH by default.
DEFAULT_DIRS = ["/opt/diy-docker/bin", "/usr/local/bin"]


def common_argument_spec():
    """The options every module of the collection takes to reach one instance of the tool."""
    return dict(
        executable=dict(type="path", default="diy-docker"),
        instance_env=dict(type="dict", default={}),
    )


class Tool:
    """One diy-docker instance on this host: its command and its DIY_DOCKER_* environment."""

    def __init__(self, module, executable, env):
        self.module = module
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.path = self._find(executable)

    def _find(self, executable):
        if "/" in executable:
            if not os.access(executable, os.X_OK):
                self.module.fail_json(msg=f"cannot run {executable}: not found or not executable")
            return executable
        found = self.module.get_bin_path(executable, opt_dirs=DEFAULT_DIRS)
        if not found:
            self.module.fail_json(msg=f"cannot find {executable} on the target host: install diy-docker "
                                      "(python3 -m venv /opt/diy-docker && /opt/diy-docker/bin/pip install .) "
                                      "or give its path with the executable option")
        return found

    def run(self, args, cwd=None):
        """Run the tool; return (rc, stdout, stderr). Never through a shell."""
        return self.module.run_command([self.path, *args], environ_update=self.env, cwd=cwd,
                                       check_rc=False)

    def must(self, args, what, cwd=None):
        """Run the tool and fail the module with its one-line error when it fails."""
        rc, out, err = self.run(args, cwd=cwd)
        if rc != 0:
            self.fail(what, rc, out, err, args)
        return out

    def fail(self, what, rc, out, err, args):
        self.module.fail_json(msg=f"cannot {what}: {one_line(err) or f'exit status {rc}'}", rc=rc,
                              stdout=out, stderr=err, cmd=[self.path, *args])

    def json(self, args, what, cwd=None):
        out = self.must(args, what, cwd=cwd)
        try:
            return json.loads(out)
        except ValueError as e:
            self.module.fail_json(msg=f"cannot {what}: {self.path} printed no JSON ({e})", stdout=out)


def one_line(err):
    """The tool ends a failure with one line on stderr (warnings may come before it)."""
    lines = [line.strip() for line in (err or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
