"""The playground: a call through the gateway with a chosen key, model and client API (Chat
Completions, Responses or Anthropic Messages), or a stored call loaded, with its own API, to be
edited and sent again (see dashboard/playground.py for why the browser sends it)."""

from django.http import Http404, HttpRequest, HttpResponse

from analytics.selectors import log_get
from dashboard.orgs import org_page, render_page
from dashboard.playground import PLAYGROUND_APIS, PLAYGROUND_DEFAULT_API, chat_models, playground_request
from keys.models import Membership
from keys.selectors import key_get, key_list


@org_page()
def playground(request: HttpRequest, membership: Membership) -> HttpResponse:
    org = membership.org
    keys = list(key_list(org=org))
    chosen, stored, source = None, None, None
    api = request.GET.get("api") if request.GET.get("api") in PLAYGROUND_APIS else PLAYGROUND_DEFAULT_API
    if request.GET.get("from"):
        source = log_get(org=org, request_id=request.GET["from"])
        stored = playground_request(source)
        if stored is None:
            raise Http404("That call cannot be opened in the playground.")
        chosen, api = source.key_id, source.endpoint
    if request.GET.get("key"):
        chosen = key_get(org=org, pk=request.GET["key"]).pk
    models = chat_models(keys)
    choices = [{"id": key.pk, "name": key.name, "prefix": key.prefix, "models": models[key.pk],
                "usable": key.is_active()} for key in keys]
    return render_page(request, membership, "dashboard/playground.html", {
        "keys": choices, "chosen": chosen, "stored": stored, "source": source, "api": api,
        "apis": [{"id": name, "label": label, "path": path} for name, (label, path) in PLAYGROUND_APIS.items()],
    })
