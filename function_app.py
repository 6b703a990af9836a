"""The Functions app: registers each capability's blueprint, nothing else."""
import azure.durable_functions as df
import azure.functions as func

from functions import (calls, callbacks, docs, documents, events, jobs, notifications, offers, rules, selftest,
                       webhooks, whatsapp)

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(jobs.bp)
app.register_functions(selftest.bp)
app.register_functions(offers.bp)
app.register_functions(documents.bp)
app.register_functions(whatsapp.bp)
app.register_functions(calls.bp)
app.register_functions(callbacks.bp)
app.register_functions(events.bp)
app.register_functions(webhooks.bp)
app.register_functions(notifications.bp)
app.register_functions(rules.bp)
app.register_functions(docs.bp)
