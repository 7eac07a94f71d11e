"""
A private, rootful Podman service (C{podman system service}) for tests: Podman's Docker-compatible API on
a socket under a temp directory, with its own storage, run and tmp directories, so neither the machine's
Docker engine nor any other Podman state is touched. Images come from the machine's Docker engine
(C{docker save | podman load}): Podman has no registry here.
"""

import os
import resource
import shutil
import subprocess

from tests.privatedocker import PrivateDockerd

__all__ = ["PrivatePodman", "podman_missing"]

#: What a rootful C{podman system service} lowers its own RLIMIT_NPROC hard limit to (seen in
#: /proc/<pid>/limits here); a container may not ask for more.
_PODMAN_NPROC = 32768


def podman_missing() -> str:
    """Why Podman cannot run here (a sentence), or "" when it can."""
    for tool, package in (("podman", "podman"), ("catatonit", "catatonit")):
        if shutil.which(tool) is None and not os.path.exists("/usr/libexec/podman/" + tool):
            return "{} is not installed: `make test-podman` installs Debian's {} and runs these tests".format(
                tool, package)
    return ""


class PrivatePodman(PrivateDockerd):
    log_name = "podman.log"
    prefix = "wpp-"

    def __init__(self):
        PrivateDockerd.__init__(self)
        self.url = "unix://{}/podman.sock".format(self.dir)

    def podman(self) -> list:
        """C{podman} with this service's private directories (for the CLI: C{podman load}, C{healthcheck run})."""
        return ["podman", "--root", os.path.join(self.dir, "root"), "--runroot", os.path.join(self.dir, "run"),
                "--tmpdir", os.path.join(self.dir, "tmp"), "--network-config-dir", os.path.join(self.dir, "net"),
                "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

    def command(self) -> list:
        return self.podman() + ["system", "service", "--time=0", self.url]

    def environ(self) -> dict:
        # Rootful Podman asks the OCI runtime for nofile and nproc limits of 1048576 by default, which this
        # machine refuses (runc: "error setting rlimit type 7/6: operation not permitted"): ask for what
        # the service itself has.
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], _PODMAN_NPROC)
        conf = os.path.join(self.dir, "containers.conf")
        with open(conf, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile={0}:{0}", "nproc={1}:{1}"]\n'.format(nofile, nproc))
        return dict(os.environ, CONTAINERS_CONF=conf)

    def load_image(self, image: str) -> None:
        """Copy C{image} from the machine's Docker engine (docker save | podman load)."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.check_call(self.podman() + ["load", "-q"], stdin=save.stdout, stdout=subprocess.DEVNULL,
                              env=self.environ())
        if save.wait() != 0:
            raise RuntimeError("docker save {} failed".format(image))

    def run_healthcheck(self, name: str) -> None:
        """Run a container's HEALTHCHECK once, as the systemd timer Podman relies on would (none here)."""
        subprocess.call(self.podman() + ["healthcheck", "run", name], env=self.environ(),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
