"""One ``Classifier`` per host, sharing one model and one rule set, fed by events.

Identities never mix across hosts: each host's processes have their own windows and
judgements. A label naming a pid belongs to the host that sent it; a label with a
``match`` reaches every host, those seen later included. The classifier agent runs this on
the bus, a replay on recorded events, a shadow policy beside the live one.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from agents.classification.decide import Classifier, Explanation, SweepResult
from agents.classification.model import OnlineModel
from agents.classification.rules import LabelBook, LabelError, RuleSet
from pipeline.events import (Classification, ContainerSamples, Envelope, HostSample, Label,
                             ProcessSamples)
from pipeline.settings import ClassifierSettings

log = logging.getLogger(__name__)


class HostClassifiers:
    def __init__(self, settings: ClassifierSettings, model: OnlineModel,
                 rules: RuleSet) -> None:
        self.classifier_settings = settings
        self.model = model
        self.rules = rules
        self.hosts: dict[str, Classifier] = {}
        self._match_labels: list[tuple[Label, str]] = []   # regex labels reach every host
        # Each host's labels, kept apart from its classifier: a host another worker judges
        # keeps its book here, so the classifier of whoever takes it over starts with it.
        self._books: dict[str, LabelBook] = {}

    def _book(self, host: str) -> LabelBook:
        book = self._books.get(host)
        if book is None:
            book = self._books[host] = LabelBook(classes=self.classifier_settings.classes)
            for label, label_id in self._match_labels:
                book.apply(label, label_id)
        return book

    def classifier_for(self, host: str) -> Classifier:
        classifier = self.hosts.get(host)
        if classifier is None:
            classifier = self.hosts[host] = Classifier.from_settings(
                self.classifier_settings, model=self.model, rules=self.rules,
                labels=self._book(host))
        return classifier

    def seed(self, host: str,
             classes: Mapping[tuple[int, int], tuple[float, Classification]]) -> None:
        """Take the classes said for ``host``'s processes (each with when it was said) as the
        judgements in force, so that a change from them needs the same agreeing windows as
        if this classifier had made them (a replay's start, a worker taking a host over)."""
        classifier = self.classifier_for(host)
        priors = {r.name for r in classifier.rules.priors}
        for key, (at, c) in classes.items():
            behaviour = c.source == "model" or (
                c.source == "rule" and c.reason.removeprefix("rule ") in priors)
            classifier.decider.seed(key, c, at, behaviour)

    def forget_hosts(self, hosts: list[str]) -> None:
        """Drop these hosts' windows and judgements (another worker owns them now)."""
        for host in hosts:
            self.hosts.pop(host, None)

    def use_rules(self, rules: RuleSet) -> None:
        """Every host's classifier, and those made later, judge with ``rules`` from now on."""
        self.rules = rules
        for classifier in self.hosts.values():
            classifier.use_rules(rules)

    def on_samples(self, event: Envelope) -> SweepResult:
        data: ProcessSamples = event.data
        return self.classifier_for(event.host).sweep(event.ts, data.samples)

    def on_host_sample(self, event: Envelope) -> None:
        """The host's boot time, which gives its processes' ages (and so their start-up)."""
        data: HostSample = event.data
        if data.boot_time:
            self.classifier_for(event.host).boot_time = data.boot_time

    def on_label(self, event: Envelope) -> None:
        """Take a label: one with a ``match`` for every host, one naming a pid for the host
        that sent it, whether it is judged here or not (yet)."""
        label: Label = event.data
        try:
            if label.match is not None:
                self._match_labels.append((label, event.id))
                for book in self._books.values():
                    book.apply(label, event.id)
            else:
                self._book(event.host).apply(label, event.id)
        except LabelError as exc:
            log.warning("label %s from %s not applied: %s", event.id, event.host, exc)

    def on_containers(self, event: Envelope) -> None:
        data: ContainerSamples = event.data
        self.classifier_for(event.host).update_containers(data.samples)

    def explain(self, host: str, pid: int, start_time: int | None = None
                ) -> Explanation | None:
        """The judgement of a process of ``host`` and the features behind it, or None."""
        classifier = self.hosts.get(host)
        return classifier.explain(pid, start_time) if classifier is not None else None
