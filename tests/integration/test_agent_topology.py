"""The agent's topology and placement end to end, with commonsd and real agents:

* on this machine (hwloc, bindings applied): `commons nodes --topology` shows what the
  agent found; each task of a multi-task job runs bound to exactly its allocated PU
  (read from /proc/PID/status of the running task processes); the memory limit is
  applied as the node's report says (cgroup or rlimit);
* on XML nodes (our configs/topologies/gpu-2x56c-8gpu.xml and the real DGX-2 of
  COMMONS_SHARED_DATA, bindings recorded): GPUs are reported with their NUMA node, each
  job's GPUs are local to its PUs, and the job runs unbound with CUDA_VISIBLE_DEVICES
  and COMMONS_CPU_LIST saying what was chosen."""
import os
import re
import unittest

from harness import ClusterTest, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SHARED = os.environ.get("COMMONS_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
PUS = len(os.sched_getaffinity(0))


def status_field(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    return None


def cpu_set(text):
    out = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def job_processes(job_id, addr=None):
    """pid -> environment of every process whose environment names the job (and, with
    addr, whose agent serves that commonsd: other tests' clusters reuse job ids)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = dict(kv.split("=", 1) for kv in f.read().decode(errors="replace").split("\0") if "=" in kv)
        except OSError:
            continue
        if env.get("COMMONS_JOB_ID") == str(job_id) and (addr is None or env.get("COMMONS_ADDR") == addr):
            found[int(name)] = env
    return found


class ThisMachine(ClusterTest):
    def setUp(self):
        super().setUp()
        self.c.start_scheduler()
        os.chmod(self.c.dir, 0o755)
        self.c.start_agent("m1", cpus=PUS)  # cpus = PUs: the topology is reported

    def test_topology_reported(self):
        topo = self.c.json("nodes", "--topology", "m1")["topology"]
        self.assertEqual((topo["source"], topo["binding"], topo["pus"]), ("hwloc", "applied", PUS))
        self.assertEqual(sorted(p for n in topo["numa"] for p in n["pus"]), sorted(os.sched_getaffinity(0)))
        self.assertIn(topo["limits"], ("cgroup", "rlimit"))
        self.assertIn("NUMA", self.c.cli("nodes", "--topology", "m1").stdout)

    @unittest.skipIf(PUS < 2, "needs 2 PUs")
    def test_each_task_bound_to_its_pu(self):
        out = os.path.join(self.c.dir, "tasks.out")
        jid = self.c.json("submit", "-n", "2", "-c", "1", "-o", out, "--", "/bin/sh", "-c",
                          "echo task $COMMONS_LOCAL_TASK_ID slice $COMMONS_TASK_CPU_LIST; exec sleep 60")["job_id"]
        self.c.wait_state(jid, "RUNNING")
        tasks = wait_until(lambda: (t := {p: e for p, e in job_processes(jid, self.c.addr).items()
                                          if "COMMONS_LOCAL_TASK_ID" in e and status_field(p, "Name") == "sleep"})
                           and len(t) == 2 and t, timeout=20, what="two running tasks")
        used = set(self.c.json("nodes", "--topology", "m1")["pus_used"])
        self.assertEqual(len(used), 2)
        allowed = {}
        for pid, env in tasks.items():
            cpus = cpu_set(status_field(pid, "Cpus_allowed_list"))
            self.assertEqual(len(cpus), 1, f"task {env['COMMONS_LOCAL_TASK_ID']} may run on {cpus}")
            self.assertEqual(cpus, cpu_set(env["COMMONS_TASK_CPU_LIST"]))
            allowed[env["COMMONS_LOCAL_TASK_ID"]] = cpus
        self.assertEqual(sorted(allowed), ["0", "1"])
        self.assertEqual(allowed["0"] | allowed["1"], used, "tasks on exactly the allocated PUs")
        self.assertNotEqual(allowed["0"], allowed["1"])
        self.c.cli("cancel", str(jid))
        self.c.wait_state(jid, "CANCELLED")
        wait_until(lambda: not job_processes(jid, self.c.addr), timeout=20, what="the tasks to end")

    def test_memory_limit(self):
        limits = self.c.json("nodes", "--topology", "m1")["topology"]["limits"]
        out = os.path.join(self.c.dir, "mem.out")
        jid = self.c.json("submit", "--mem", "64M", "-o", out, "--", "/bin/sh", "-c",
                          "ulimit -v; cat /proc/self/cgroup")["job_id"]
        self.assertEqual(self.c.wait_state(jid, ("COMPLETED", "FAILED"))["state"], "COMPLETED")
        with open(out) as f:
            text = f.read()
        if limits == "rlimit":
            self.assertTrue(text.startswith("65536\n"), text)  # KiB of address space
        else:
            self.assertTrue(text.startswith("unlimited\n"), text)


class XmlNodes(ClusterTest):
    def setUp(self):
        super().setUp()
        self.c.start_scheduler()
        os.chmod(self.c.dir, 0o755)

    def run_gpu_jobs(self, node, cpus_per_job, gpus_per_job, count):
        """Submits count jobs that print what they were given; returns their outputs and the node's topology."""
        topo = self.c.json("nodes", "--topology", node)["topology"]  # the agent's report
        jobs = []
        for i in range(count):
            out = os.path.join(self.c.dir, f"{node}-{i}.out")
            jid = self.c.json("submit", "-c", str(cpus_per_job), "-G", str(gpus_per_job), "-o", out, "--",
                              "/bin/sh", "-c", "echo cpus=$COMMONS_CPU_LIST gpus=$CUDA_VISIBLE_DEVICES "
                              "allowed=$(grep Cpus_allowed_list /proc/self/status | cut -f2); sleep 2")["job_id"]
            jobs.append((jid, out))
        results = []
        for jid, out in jobs:
            self.assertEqual(self.c.wait_state(jid, ("COMPLETED", "FAILED"), timeout=30)["state"], "COMPLETED")
            with open(out) as f:
                m = re.search(r"cpus=(\S+) gpus=(\S+) allowed=(\S+)", f.read())
            self.assertIsNotNone(m)
            results.append((cpu_set(m.group(1)), [int(g) for g in m.group(2).split(",")], m.group(3)))
        return topo, results

    def check_locality(self, topo, results, cpus_per_job, gpus_per_job):
        pu_numa = {p: n["id"] for n in topo["numa"] for p in n["pus"]}
        gpu_numa = {g["index"]: g["numa"] for g in topo["gpus"]}
        mine = status_field(os.getpid(), "Cpus_allowed_list")
        for cpus, gpus, allowed in results:
            self.assertEqual(len(cpus), cpus_per_job)
            self.assertEqual(len(gpus), gpus_per_job)
            numa = {pu_numa[p] for p in cpus}
            self.assertEqual(len(numa), 1, f"PUs {cpus} span NUMA nodes {numa}")
            self.assertEqual({gpu_numa[g] for g in gpus}, numa, f"GPUs {gpus} not local to PUs {cpus}")
            self.assertEqual(allowed, mine, "a recorded binding is not applied")

    def test_our_8_gpu_node(self):
        xml = os.path.join(REPO, "configs", "topologies", "gpu-2x56c-8gpu.xml")
        self.c.start_agent("g1", cpus=112, memory_mb=500000, extra=("--topology", xml))
        topo, results = self.run_gpu_jobs("g1", 50, 4, 2)
        self.assertEqual(len(topo["gpus"]), 8)
        self.assertEqual([g["numa"] for g in topo["gpus"]], [0, 0, 0, 0, 1, 1, 1, 1])
        self.check_locality(topo, results, 50, 4)
        # Two jobs of 50 PUs and 4 GPUs each fit one socket each: they are on different ones.
        self.assertNotEqual({p // 56 for p in results[0][0]}, {p // 56 for p in results[1][0]})

    def test_dgx2_from_shared_data(self):
        xml = os.path.join(SHARED, "topologies", "nvidiaDGX2.xml")
        self.assertTrue(os.path.exists(xml), f"{xml} missing (COMMONS_SHARED_DATA)")
        self.c.start_agent("dgx", cpus=4, memory_mb=100000, extra=("--topology", xml))
        topo, results = self.run_gpu_jobs("dgx", 2, 8, 2)
        self.assertEqual(len(topo["gpus"]), 16)
        self.check_locality(topo, results, 2, 8)


if __name__ == "__main__":
    unittest.main()
