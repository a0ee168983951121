"""`commons keys create|list|revoke`: citizens' API keys in the gateway's store."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import binary

POLICY = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "policy.local.yaml")


class Keys(unittest.TestCase):
    def setUp(self):
        self.state = tempfile.mkdtemp(prefix="commons-keys-")
        self.addCleanup(shutil.rmtree, self.state, True)

    def commons(self, *args, check=True):
        p = subprocess.run([binary("cli/commons"), *args], capture_output=True, text=True, timeout=60)
        if check:
            self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def test_create_list_revoke(self):
        key = self.commons("keys", "create", "--state", self.state, "--name", "ada", "--tier", "citizen",
                           "--policy", POLICY).stdout.strip()
        self.assertTrue(key.startswith("cmk_"), key)
        keys = json.loads(self.commons("--json", "keys", "list", "--state", self.state).stdout)
        self.assertEqual([(k["name"], k["tier"], k["revoked"]) for k in keys], [("ada", "citizen", False)])
        # Only a hash is stored: the key text is in no file of the store.
        for name in os.listdir(self.state):
            with open(os.path.join(self.state, name), "rb") as f:
                self.assertNotIn(key.encode(), f.read())
        self.commons("keys", "revoke", "--state", self.state, "ada")
        keys = json.loads(self.commons("--json", "keys", "list", "--state", self.state).stdout)
        self.assertTrue(keys[0]["revoked"])
        p = self.commons("keys", "create", "--state", self.state, "--tier", "gold", "--policy", POLICY, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("tier 'gold' is not in", p.stderr)
        p = self.commons("keys", "revoke", "--state", self.state, "nobody", check=False)
        self.assertNotEqual(p.returncode, 0)


if __name__ == "__main__":
    unittest.main()
