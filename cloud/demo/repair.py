"""``boilertwin demo --scenario repair``: the service platform's whole story on the demo.

Played over the REST API by the people ``run-demo.sh`` provisions, each logged in as
themselves, on the boiler that has an owner and a tenant:

1. the boiler locks out with F28 (as in the lockout scenario);
2. the tenant's feed shows the ``boiler_alarm`` notification;
3. the tenant asks for a repair (no heating), the owner authorises it; the platform's check
   against the live twin (outcome and evidence) and its task analysis (skills, cost, urgency);
4. who was invited and why (W, AR, CS*, SQ*, distance); each invited engineer answers from
   their own login: available, a quote, where they are;
5. the shortlist (rank, distance, travel time, CO2, quote); the owner picks the top one;
6. the contracted engineer's restart is refused before the completion report, with the reason;
7. the cause is repaired on the simulator, the engineer reports and restarts the boiler, and
   the command is followed to its outcome;
8. the platform verifies the repair on live data (``verify_normal_s`` of normal running: 10 s
   in the demo's cloud);
9. the tenant rates the job with the token from their ``evaluate`` notification: the
   engineer's AR, CS and SQ before and after;
10. the job's thread, one line per event.

Invited engineers answer only by logging in, so ``run-demo.sh`` gives every demo engineer a
login and the round closes at the last answer. One without a login in ``demo.json`` is said to
stay silent; the scenario then waits for the cloud to close the round at its deadline (five
minutes in the demo's cloud), or stops if that is more than `MAX_ROUND_WAIT_S` away.

Re-runnable on the same demo: what an interrupted run left (open jobs, a lockout) is cleared
first, and nothing depends on job ids or on which engineer wins (the same one may).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from cloud.demo import wording
from cloud.demo.client import (
    Boiler,
    DemoError,
    DemoInfo,
    Http,
    Narrator,
    Transport,
    status_label,
    urllib_transport,
)
from cloud.demo.lockout import (
    LOCKOUT,
    Timeouts,
    ask_restart,
    follow_command,
    leave_lockout,
    lock_out,
    restart,
    twin_of,
)

CANCELLABLE = frozenset(
    {
        "pending_authorization",
        "flagged",
        "crowdsourcing",
        "no_engineers",
        "shortlisted",
        "contracted",
    }
)
"""Job states an interrupted run can leave that the owner may cancel."""
DEFAULT_TIMEOUTS = Timeouts()
MAX_ROUND_WAIT_S = 420.0
"""Longest wait for the cloud to close a round some invited engineers cannot answer."""
REQUEST = {
    "service_type": "repair",
    "problem": "no_heating",
    "description": "No heating since this morning; the display shows F28.",
    "principle": "low_carbon",
}
REPORT = {
    "cause": "gas isolation valve left part-closed after meter work: no gas at the burner (F28)",
    "actions": "opened the valve, inlet pressure 20 mbar, ignition and flame signal checked",
    "parts": ["gas valve seal"],
}
RATING = {"cs": 5, "sq": 4, "comment": "Quick, tidy, and explained the fault."}


def repair_scenario(
    info: DemoInfo,
    narrator: Narrator,
    transport: Transport = urllib_transport,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> bool:
    """The whole service story; True when the job ends verified and evaluated."""
    return RepairStory(info, narrator, transport, timeouts).play()


def served_boiler(info: DemoInfo) -> Boiler:
    """The first boiler with an owner and a tenant who can both log in."""
    for boiler in info.boilers:
        if boiler.owner in info.passwords and boiler.tenant in info.passwords:
            return boiler
    raise DemoError("demo.json has no boiler with an owner and a tenant who can log in")


class RepairStory:
    """The repair scenario: its cast (a logged-in client each) and its steps, in order."""

    def __init__(
        self, info: DemoInfo, narrator: Narrator, transport: Transport, timeouts: Timeouts
    ) -> None:
        self.info = info
        self.narrator = narrator
        self.say = narrator.say
        self.transport = transport
        self.timeouts = timeouts
        self.boiler = served_boiler(info)
        self.owner_id, self.tenant_id = str(self.boiler.owner), str(self.boiler.tenant)
        self.owner = self.login(self.owner_id)
        self.tenant = self.login(self.tenant_id)
        self.sim = Http(self.boiler.control, transport)
        self.engineers: dict[str, Http] = {}
        self.job: dict[str, Any] = {}
        self.before: dict[str, dict[str, Any]] = {}
        """Invited engineers' profiles before they answered."""
        self.chosen = ""
        self.leftovers: list[str] = []
        """Completed jobs of earlier runs, still awaiting verification."""

    # -- plumbing --------------------------------------------------------------------------

    def login(self, user: str) -> Http:
        """A client logged in as `user` (whose password ``demo.json`` has)."""
        client = Http(self.info.api, self.transport)
        client.login(user, self.info.passwords[user])
        return client

    def engineer(self, engineer_id: str) -> Http | None:
        """The engineer's client; None if ``demo.json`` has no login for them."""
        if engineer_id not in self.engineers:
            if engineer_id not in self.info.logins("engineer"):
                return None
            self.engineers[engineer_id] = self.login(engineer_id)
        return self.engineers[engineer_id]

    @property
    def contractor(self) -> Http:
        """The contracted engineer's client."""
        client = self.engineer(self.chosen)
        assert client is not None  # only engineers who answered are shortlisted
        return client

    def step(self, number: int, title: str) -> None:
        """A step's heading."""
        self.say(f"--- {number}. {title}")

    def path(self, tail: str = "") -> str:
        """The job's URL path, plus `tail`."""
        return f"/jobs/{self.job['id']}{tail}"

    def refresh(self) -> dict[str, Any]:
        """The job as its owner sees it now."""
        self.job = dict(self.owner.call("GET", self.path()))
        return self.job

    def thread(self) -> list[dict[str, Any]]:
        """The job's thread, oldest first."""
        return list(self.owner.call("GET", self.path("/thread"))["events"])

    def last_event(self, kind: str) -> dict[str, Any]:
        """The data of the job's latest thread event of `kind` ({} if none)."""
        found = [e for e in self.thread() if e["kind"] == kind]
        return dict(found[-1].get("data") or {}) if found else {}

    def note(
        self, client: Http, who: str, kind: str, match: Callable[[Mapping[str, Any]], bool]
    ) -> dict[str, Any]:
        """Wait for the newest notification of `kind` in `who`'s feed that `match`es; say it."""

        def found() -> dict[str, Any] | None:
            items = client.call("GET", "/notifications?limit=50")["items"]
            return next((dict(n) for n in items if n["kind"] == kind and match(n)), None)

        note = self.narrator.wait_for(
            found, f"a {kind} notification for {who}", self.timeouts.notification, every=0.3
        )
        self.say(f"{who}'s feed: [{kind}] {note['title']}")
        return note

    def wait_for_state(self, states: frozenset[str], what: str, timeout: float) -> str:
        """Wait until the job is in one of `states`; returns the state."""

        def reached() -> str | None:
            state = str(self.refresh()["state"])
            return state if state in states else None

        return self.narrator.wait_for(reached, what, timeout, every=0.3)

    # -- the story -------------------------------------------------------------------------

    def play(self) -> bool:
        """Every step in order; True when the job ends evaluated."""
        engineers = ", ".join(self.info.logins("engineer")) or "none"
        self.say(f"{self.boiler.id}: owner {self.owner_id}, tenant {self.tenant_id}")
        self.say(f"engineers who can log in: {engineers}")
        self.tidy()
        self.lockout_and_alarm()
        self.request()
        self.invite_and_answer()
        self.choose()
        self.early_restart()
        repaired = self.repair_and_restart()
        if repaired:
            self.verification()
            self.evaluation()
        self.show_thread()
        return repaired and self.job["state"] == "evaluated"

    def tidy(self) -> None:
        """Clear what an interrupted earlier run left: open jobs are cancelled; a lockout is
        cleared (every cause repaired, support restarts the boiler)."""
        jobs = self.owner.call("GET", f"/jobs?device_id={self.boiler.id}&limit=200")["items"]
        for job in jobs:
            if job["state"] in CANCELLABLE:
                note = {"note": "demo: left open by an earlier run"}
                self.owner.call("POST", f"/jobs/{job['id']}/cancel", json_body=note)
                short = wording.short(job["id"])
                self.say(f"cancelled job {short} ({job['state']}) of an earlier run")
        # Awaiting verification, they would let their engineer restart the boiler at step 6.
        self.leftovers = [str(job["id"]) for job in jobs if job["state"] == "completed"]
        if status_label(twin_of(self.tenant, self.boiler.id)) != LOCKOUT:
            return
        self.say(f"{self.boiler.id} is still locked out by an earlier run: clearing it first")
        self.sim.call("POST", "/repair", json_body={})
        support = self.login(self.info.user_with_role("support")[0])
        command = restart(support, self.boiler.id, "demo: clear a lockout an earlier run left")
        if follow_command(support, command, self.narrator, self.timeouts.command)["state"] != (
            "succeeded"
        ):
            raise DemoError(f"cannot clear the lockout of {self.boiler.id}")
        leave_lockout(self.tenant, self.boiler.id, self.narrator, self.timeouts.recovery)

    def lockout_and_alarm(self) -> None:
        """Steps 1 and 2: the lockout, and the tenant's alarm notification."""
        self.step(1, f"{self.boiler.id} locks out")
        feed = self.tenant.call("GET", "/notifications?limit=1")["items"]
        mark = int(feed[0]["id"]) if feed else 0
        _, injected = lock_out(self.tenant, self.sim, self.boiler.id, self.narrator, self.timeouts)
        for job_id in self.leftovers:  # the new lockout fails their verification
            self.job = {"id": job_id}
            state = self.wait_for_state(
                frozenset({"verified", "failed_verification", "evaluated"}),
                f"job {wording.short(job_id)} of an earlier run to leave 'completed'",
                self.timeouts.notification,
            )
            self.say(f"job {wording.short(job_id)} of an earlier run is now {state}")

        self.step(2, f"the tenant, {self.tenant_id}, is told")
        note = self.note(
            self.tenant,
            self.tenant_id,
            "boiler_alarm",
            lambda n: n["device_id"] == self.boiler.id and (n["id"] > mark or not injected),
        )
        if note.get("body"):
            self.say(f"  {note['body']}")

    def request(self) -> None:
        """Step 3: the tenant's request, the owner's authorisation, validation and analysis."""
        self.step(3, "the tenant asks for a repair; the owner authorises it")
        self.job = dict(
            self.tenant.call(
                "POST",
                "/jobs",
                ok=(200, 201),
                json_body={"device_id": self.boiler.id, **REQUEST},
                headers={"Idempotency-Key": f"demo-{uuid.uuid4()}"},
            )
        )
        self.say(
            f"{self.tenant_id} asks for a repair (no heating): job {wording.short(self.job['id'])} "
            f"is {self.job['state']}"
        )
        self.note(self.owner, self.owner_id, "request_to_authorize", self.about_job)
        approval = {"approve": True, "note": "Yes please, the tenant is in all day."}
        self.job = dict(self.owner.call("POST", self.path("/authorize"), json_body=approval))
        self.say(f"{self.owner_id} authorises it: job is {self.job['state']}")
        validation = self.job.get("validation") or {}
        self.say(f"validation: {validation.get('outcome')}: {validation.get('reason')}")
        self.say(f"  evidence: {wording.evidence(validation.get('evidence') or {})}")
        if self.job["state"] == "flagged":
            confirmation = {"note": "demo: confirmed with the tenant by phone"}
            self.job = dict(self.owner.call("POST", self.path("/confirm"), json_body=confirmation))
            self.say(f"{self.owner_id} confirms it anyway: job is {self.job['state']}")
        analysis = self.job.get("analysis") or {}
        self.say(f"analysis: {wording.task(analysis)}")
        for reason in analysis.get("reasons") or []:
            self.say(f"  {reason}")

    def about_job(self, note: Mapping[str, Any]) -> bool:
        """Whether a notification is about this run's job."""
        return bool(note["job_id"] == self.job["id"])

    def invite_and_answer(self) -> None:
        """Step 4: who was invited and why; each invited engineer with a login answers."""
        self.step(4, "the platform invites engineers; they answer")
        sourcing = self.last_event("crowdsourcing")
        if self.job["state"] != "crowdsourcing":
            raise DemoError(
                f"job {wording.short(self.job['id'])} is {self.job['state']}: "
                f"{wording.sourcing(sourcing)}",
                job_id=self.job["id"],
            )
        self.say(wording.sourcing(sourcing))
        q = sourcing.get("rules") or {}
        self.say(
            f"W = {q.get('q_ar')} AR + {q.get('q_cs')} CS* + {q.get('q_sq')} SQ*, with CS* and "
            "SQ* min-max normalised over the eligible engineers"
        )
        invitations = self.owner.call("GET", self.path("/invitations"))["items"]
        for item in invitations:
            engineer_id, f = str(item["engineer_id"]), item.get("figures") or {}
            profile = self.before[engineer_id] = self.owner.call("GET", f"/engineers/{engineer_id}")
            gap = f.get("price_gap")
            self.say(
                f"  invited {engineer_id:<10} {profile.get('display_name', ''):<15} "
                f"{f.get('reason') or '-':<8} W {wording.num(f.get('performance'))} "
                f"(AR {wording.num(f.get('ar'))}, CS* {wording.num(f.get('cs_norm'))}, SQ* "
                f"{wording.num(f.get('sq_norm'))}), "
                f"lives {wording.num(f.get('distance_km'), '.1f')} km away"
                + (f", usual price {gap:.0%} off the estimate" if gap is not None else "")
            )
        silent = [str(i["engineer_id"]) for i in invitations if not self.answer(i["engineer_id"])]
        self.close_round(silent)

    def answer(self, engineer_id: str) -> bool:
        """The engineer finds the invitation and answers; False if they cannot log in."""
        client = self.engineer(engineer_id)
        if client is None:
            self.say(f"  {engineer_id} has no demo login, so cannot answer")
            return False
        mine = client.call("GET", "/invitations?state=open")["items"]
        invitation = next((i for i in mine if i["job_id"] == self.job["id"]), None)
        if invitation is None:
            raise DemoError(f"{engineer_id} does not see the invitation", user=engineer_id)
        profile = client.call("GET", f"/engineers/{engineer_id}")
        usual = (profile.get("prices") or {}).get("repair", {}).get("average")
        estimate = float((invitation["job"].get("analysis") or {}).get("cost") or 150.0)
        quote = round(float(usual) if usual else 0.9 * estimate)  # newcomers undercut a little
        home = profile["home"]
        body = {"available": True, "quote": quote, "location": home, "note": "can come today"}
        client.call("POST", self.path("/response"), json_body=body)
        self.say(
            f"  {engineer_id} answers: available, {wording.gbp(quote)}, "
            f"now at {home['lat']:.4f},{home['lon']:.4f}"
        )
        return True

    def close_round(self, silent: list[str]) -> None:
        """Wait for the round to close: at once when all answered, else at the deadline."""
        timeout = self.timeouts.notification
        if silent:
            due_s = (int(self.refresh().get("responses_due") or 0) - time.time() * 1000) / 1000
            if due_s > MAX_ROUND_WAIT_S:
                raise DemoError(
                    f"{', '.join(silent)} cannot log in to answer, and the round closes in "
                    f"{due_s:.0f} s: give every demo engineer a login (run-demo.sh does) or "
                    "shorten the cloud's response_window_s",
                    job_id=self.job["id"],
                )
            self.say(f"waiting {max(due_s, 0):.0f} s for the cloud to close the round")
            timeout += max(due_s, 0.0)
        closed = frozenset({"shortlisted", "no_engineers", "cancelled"})
        state = self.wait_for_state(closed, "the round to close", timeout)
        if state != "shortlisted":
            short = wording.short(self.job["id"])
            raise DemoError(f"job {short} is {state}: nobody to choose from")

    def choose(self) -> None:
        """Step 5: the shortlist, and the owner's choice of its top engineer."""
        self.step(5, "the owner reads the shortlist and chooses")
        listing = self.owner.call("GET", self.path("/shortlist"))
        self.say(f"shortlist, {listing['principle']} (rank 0% is best):")
        for c in listing["candidates"]:
            self.say(
                f"  {c['position']}. {c['engineer_id']:<10} {c.get('display_name', ''):<15} "
                f"rank {c['rank_pct']:5.1f}%  {c['distance_km']:5.1f} km  "
                f"~{c['travel_min']:3.0f} min  {c['co2_kg']:4.2f} kg CO2  {wording.gbp(c['quote'])}"
            )
        a = listing.get("assumptions") or {}
        self.say(
            f"  (road = great circle x {a.get('road_factor')}, {a.get('speed_kmh')} km/h, "
            f"{a.get('co2_kg_per_km')} kg CO2 per km, there and back)"
        )
        self.chosen = str(listing["candidates"][0]["engineer_id"])
        choice = {"engineer_id": self.chosen}
        self.job = dict(self.owner.call("POST", self.path("/select"), json_body=choice))
        contract = self.job.get("contract") or {}
        self.say(
            f"{self.owner_id} chooses {self.chosen}: job is {self.job['state']}, "
            f"{wording.gbp(contract.get('quote'))}, at {contract.get('address') or self.boiler.id}"
        )
        note = self.note(self.contractor, self.chosen, "contract", self.about_job)
        self.say(f"  {note['body']}")

    def early_restart(self) -> None:
        """Step 6: a restart before the completion report is refused, with the reason."""
        self.step(6, f"{self.chosen} tries a remote restart before reporting the repair")
        reply = ask_restart(self.contractor, self.boiler.id, "demo: before the report")
        if reply.status in (200, 202):
            raise DemoError(
                f"the cloud accepted {self.chosen}'s restart before the completion report",
                user=self.chosen,
            )
        if reply.status != 403:
            raise DemoError(f"restart before the report: {reply.problem()}", status=reply.status)
        self.say(f"refused: {reply.problem()}")

    def repair_and_restart(self) -> bool:
        """Step 7: the repair, the report, the engineer's restart; True if it succeeded."""
        self.step(7, f"{self.chosen} repairs the boiler, reports, restarts it")
        self.sim.call("POST", "/repair", json_body={"code": "F28"})
        self.say("simulator: F28's cause repaired (gas back); still locked out until a reset")
        self.job = dict(self.contractor.call("POST", self.path("/complete"), json_body=REPORT))
        self.say(f"{self.chosen} reports the work: job is {self.job['state']}")
        self.say(f"  cause: {REPORT['cause']}")
        self.say(f"  actions: {REPORT['actions']}; parts: {', '.join(REPORT['parts'])}")
        reason = f"after the repair of job {wording.short(self.job['id'])}"
        command = restart(self.contractor, self.boiler.id, reason)
        self.say(f"restart requested by {self.chosen}: command {command['id']} is created")
        final = follow_command(self.contractor, command, self.narrator, self.timeouts.command)
        if final["state"] != "succeeded":
            return False
        leave_lockout(self.tenant, self.boiler.id, self.narrator, self.timeouts.recovery)
        return True

    def verification(self) -> None:
        """Step 8: the platform verifies the repair on live data."""
        self.step(8, "the platform verifies the repair on live data")
        started = self.narrator.elapsed()
        state = self.wait_for_state(
            frozenset({"verified", "failed_verification"}),
            "the job to be verified (the demo's cloud wants 10 s of normal running)",
            self.timeouts.verification,
        )
        event = self.last_event("verification")
        shown = wording.evidence(event.get("evidence") or {})
        if state != "verified":
            raise DemoError(f"verification failed: {event.get('because')} ({shown})")
        self.say(
            f"job VERIFIED after {self.narrator.elapsed() - started:.1f} s: normal for "
            f"{wording.num(event.get('normal_for_s'), '.1f')} s "
            f"(wanted {event.get('required_s')} s); "
            f"{shown}"
        )
        self.sim.call("POST", "/demand", json_body={"ch": "auto"})
        self.say("simulator: heat demand back to the thermostat")

    def evaluation(self) -> None:
        """Step 9: the tenant rates the job; the engineer's figures before and after."""
        self.step(9, f"{self.tenant_id} rates the service")
        note = self.note(self.tenant, self.tenant_id, "evaluate", self.about_job)
        token = (note.get("data") or {}).get("evaluation_token")
        if not token:
            raise DemoError("the evaluate notification carries no token", job_id=self.job["id"])
        rating = {"token": token, **RATING}
        figures = self.tenant.call("POST", self.path("/evaluation"), json_body=rating)
        self.say(f"{self.tenant_id} gives CS {RATING['cs']} and SQ {RATING['sq']}, with the token")
        after = self.owner.call("GET", f"/engineers/{self.chosen}")
        old, new = figures["before"], figures["after"]
        self.say(
            f"{self.chosen}: AR {wording.ar(self.before.get(self.chosen, {}))} -> "
            f"{wording.ar(after)}, "
            f"CS {old['cs']:.3f} -> {new['cs']:.3f}, SQ {old['sq']:.3f} -> {new['sq']:.3f} "
            f"(jobs rated {old['evaluated']} -> {new['evaluated']})"
        )
        self.refresh()

    def show_thread(self) -> None:
        """Step 10: the job's thread, one line per event."""
        self.step(10, f"the thread of job {self.job['id']}")
        events = self.thread()
        first = events[0]["ts"] if events else 0
        for e in events:
            self.say(
                f"  +{(e['ts'] - first) / 1000:5.1f} s  {e['kind']:<13} "
                f"{e.get('actor') or '-':<20} {wording.summary(e)}"
            )
        self.say(f"job {wording.short(self.job['id'])} is {self.refresh()['state']}")
