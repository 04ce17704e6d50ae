"""One request scored with one model: the offline encoder and graph call of ``ctl score``, per request."""

from __future__ import annotations

from ctl.serve.online.schema import REQUEST, ScoreRequest, ScoreResponse, request_tables
from ctl.serve.online.state import LoadedModel
from ctl.serve.score import score_encoded


def score_one(model: LoadedModel, request: ScoreRequest) -> ScoreResponse:
    """The probabilities of the request's candidates, in their order, by ``model`` alone.

    Raises:
        RequestProblem: a feature missing from a candidate, given twice or unknown to the domain.
        CtlError: what the offline encoder refuses (an unknown or other domain, ``hist_end`` past
            the user's history, ...), naming the request's column and candidate (``row``, 1-based).
    """
    table, recent = request_tables(request, model.encoder.required_features(),
                                   tuple(f.name for f in model.artifact.schema.features))
    encoded = model.encoder.encode(table, REQUEST, recent)
    probabilities = score_encoded(model.artifact, encoded)
    unknown = {column: int(count) for column, count in encoded.unknown.items() if count}
    return ScoreResponse(probabilities=probabilities.tolist(), method=model.method, period=model.period,
                         fingerprint=model.fingerprint, artifact=model.path.name, unknown_ids=sum(unknown.values()),
                         unknown=unknown)
