import Mustache

/// The web admin center's Mustache templates, compiled into the binary (no files to install, no
/// JavaScript, no build step). `{{x}}` escapes HTML; `{{{x}}}` is used only for SVG the server drew.
enum Templates {
    static func library() throws -> MustacheLibrary {
        var lib = MustacheLibrary()
        for (name, text) in all { try lib.register(text, named: name) }
        return lib
    }

    /// A rendering context with no Optionals in it: a nil is left out (its section does not open, its
    /// variable is empty), anything else is unwrapped, in nested dictionaries and arrays too.
    /// swift-mustache looks a key up as `Any?` and takes an Optional stored in `Any` for a value: an
    /// absent notice would open `{{#notice}}` and print `nil` in it.
    static func context(_ value: Any) -> Any? {
        if let optional = value as? any OptionalValue {
            guard let wrapped = optional.wrappedValue else { return nil }
            return context(wrapped)
        }
        if let dictionary = value as? [String: Any] { return dictionary.compactMapValues(context) }
        if let array = value as? [Any] { return array.compactMap(context) }
        return value
    }

    static let all: [(String, String)] = [
        ("head", head), ("foot", foot), ("login", login), ("overview", overview), ("queue", queue),
        ("message", message), ("trace", trace), ("forests", forests), ("error", errorPage), ("health", health),
        ("healthIssue", healthIssue), ("healthReport", healthReport), ("diagnostics", diagnostics),
    ]

    static let head = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · Mailflow admin center</title>
        {{#refresh}}<meta http-equiv="refresh" content="{{refresh}}">{{/refresh}}
        <style>
        body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1b1b;background:#f5f6f8}
        header{background:#1f3a5f;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}
        header a{color:#dce6f2;text-decoration:none}header a.active{color:#fff;font-weight:600;border-bottom:2px solid #fff}
        header .host{margin-left:auto;font-size:.85rem;color:#c7d3e3}
        main{padding:1rem 1.2rem;max-width:1200px}
        h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
        .cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.6rem .9rem;min-width:8.5rem}
        .card .n{font-size:1.5rem;font-weight:600}.card .l{font-size:.8rem;color:#555}
        .charts{display:flex;flex-wrap:wrap;gap:1rem}.chartbox{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.5rem}
        .chartbox h3{font-size:.9rem;margin:.1rem 0 .3rem}
        table{border-collapse:collapse;background:#fff;width:100%;font-size:.85rem}
        th,td{border:1px solid #dde1e6;padding:.3rem .5rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}th{background:#eef1f5}
        td.num,th.num{text-align:right}th.nw,td.nw{white-space:nowrap;overflow-wrap:normal}
        .meter{background:#e6e9ee;border-radius:3px;width:10rem;height:.7rem;display:inline-block;vertical-align:middle}
        .meter span{display:block;height:100%;border-radius:3px;background:#3b7dd8}.meter span.hot{background:#d9534f}
        form.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;background:#fff;border:1px solid #dde1e6;padding:.6rem;border-radius:6px}
        form.filters label{display:flex;flex-direction:column;font-size:.75rem;color:#444}
        input,select,button{font:inherit;font-size:.85rem;padding:.25rem .4rem}
        button{background:#1f3a5f;color:#fff;border:0;border-radius:4px;cursor:pointer}button.danger{background:#b52b27}
        .actions form{display:inline}.status-Delivered{color:#1e7b34}.status-Failed{color:#b52b27}.status-Held{color:#a06000}
        .notice{background:#e8f4ea;border:1px solid #9ccfa6;padding:.5rem;border-radius:4px}
        .error{background:#fbeaea;border:1px solid #e2a3a1;padding:.5rem;border-radius:4px}
        pre{background:#fff;border:1px solid #dde1e6;padding:.6rem;overflow:auto;font-size:.8rem}
        details summary{cursor:pointer}
        .st-serviceOperational{color:#1e7b34}.st-serviceInterruption{color:#b52b27;font-weight:600}.st-serviceDegradation{color:#a06000;font-weight:600}
        .st-investigating,.st-restoringService,.st-extendedRecovery{color:#a06000}.st-serviceRestored,.st-falsePositive,.st-postIncidentReviewPublished{color:#555}
        .card a{margin-right:.3rem}.button{display:inline-block;background:#1f3a5f;color:#fff;border-radius:4px;padding:.3rem .6rem;text-decoration:none;font-size:.85rem}
        .post{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.4rem .6rem;margin:.5rem 0}.post h3{font-size:.85rem;margin:.1rem 0 .3rem;color:#444}
        .post pre{white-space:pre-wrap;border:0;padding:0;margin:0;font-size:.82rem}.post-postIncidentReview{border-color:#9ccfa6}
        form.stack{display:flex;flex-direction:column;gap:.4rem;background:#fff;border:1px solid #dde1e6;padding:.6rem;border-radius:6px;max-width:48rem}
        form.stack label{display:flex;flex-direction:column;font-size:.8rem;color:#444}form.stack button{align-self:flex-start}
        textarea{font:inherit;font-size:.85rem;padding:.3rem}
        .badge{display:inline-block;min-width:4.2rem;text-align:center;border-radius:3px;padding:.05rem .4rem;font-size:.75rem;font-weight:600;color:#fff;text-transform:uppercase}
        .badge-ok{background:#2e9d4e}.badge-info{background:#3b7dd8}.badge-warning{background:#c77c00}.badge-failure{background:#b52b27}
        .verdict{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.5rem .7rem}.check-group h2 .badge{margin-left:.4rem;vertical-align:middle}
        .check-group pre{margin:.3rem 0 0;white-space:pre-wrap}
        </style></head><body>
        {{#nav}}<header><strong>Mailflow</strong>
        {{#operator}}<a href="/" class="{{#overview}}active{{/overview}}">Overview</a>{{/operator}}
        <a href="/queue" class="{{#queue}}active{{/queue}}">Queue</a>
        <a href="/trace" class="{{#trace}}active{{/trace}}">Message trace</a>
        {{#operator}}<a href="/forests" class="{{#forests}}active{{/forests}}">Forests &amp; tenants</a>{{/operator}}
        <a href="/health" class="{{#health}}active{{/health}}">Service health</a>
        {{#operator}}<a href="/diagnostics" class="{{#diagnostics}}active{{/diagnostics}}">Diagnostics</a>{{/operator}}
        <span class="host">{{hostname}} · {{actor}}{{#scopeTenant}} · <span id="scope-tenant">tenant {{scopeTenant}}</span>{{/scopeTenant}}</span>
        <form method="post" action="/logout"><input type="hidden" name="csrf" value="{{csrf}}"><button>Sign out</button></form>
        </header>{{/nav}}
        <main>
        """

    static let foot = """
        </main></body></html>
        """

    static let login = """
        {{> head}}
        <h1>Sign in to the Mailflow admin center</h1>
        {{#error}}<p class="error" id="login-error">{{error}}</p>{{/error}}
        <form method="post" action="/login" class="filters">
        <label>Admin token<input type="password" name="token" id="token" size="60" autocomplete="off" required></label>
        <button type="submit" id="signin">Sign in</button>
        </form>
        <p>Create a token with <code>mailflow admin token add NAME</code>; it is shown once.</p>
        {{> foot}}
        """

    static let overview = """
        {{> head}}
        <h1>Overview</h1>
        <div class="cards" id="cards">
        {{#cards}}<div class="card" data-card="{{key}}"><div class="n">{{value}}</div><div class="l">{{label}}</div></div>{{/cards}}
        </div>
        <h2>Last {{hours}} hours ({{bucketMinutes}}-minute buckets)</h2>
        <div class="charts">
        <div class="chartbox"><h3>Messages in / out</h3>{{{chartMessages}}}</div>
        <div class="chartbox"><h3>Deferral rate</h3>{{{chartDeferral}}}</div>
        <div class="chartbox"><h3>Queue size (pending recipients)</h3>{{{chartQueue}}}</div>
        </div>
        <h2>Most frequent errors and refusals, last hour</h2>
        <table id="errors-table"><thead><tr><th>Kind</th><th class="num">Count</th><th>Reply</th><th>First seen</th><th>Last seen</th></tr></thead><tbody>
        {{#errors}}<tr><td>{{kind}}</td><td class="num">{{count}}</td><td>{{text}}</td><td>{{first}}</td><td>{{last}}</td></tr>{{/errors}}
        {{^errors}}<tr><td colspan="5">No deferrals, failures or refusals in the last hour.</td></tr>{{/errors}}
        </tbody></table>
        {{> foot}}
        """

    static let queue = """
        {{> head}}
        <h1>Queue</h1>
        {{#notice}}<p class="notice" id="notice">{{notice}}</p>{{/notice}}
        <form class="filters" method="get" action="/queue">
        <label>State<select name="state">{{#states}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/states}}</select></label>
        <label>Sender or recipient contains<input name="q" value="{{q}}"></label>
        <button type="submit">Filter</button>
        </form>
        <p>{{count}} message(s)</p>
        <table id="queue-table"><thead><tr><th>Queue ID</th><th>Received</th><th>Sender</th><th>Recipients</th><th class="num">Size</th><th>State</th><th class="num">Attempts</th><th>Next attempt</th></tr></thead><tbody>
        {{#messages}}<tr><td><a href="/queue/{{id}}">{{id}}</a></td><td>{{received}}</td><td>{{sender}}</td><td>{{recipients}}</td><td class="num">{{size}}</td><td>{{state}}</td><td class="num">{{attempts}}</td><td>{{nextAttempt}}</td></tr>{{/messages}}
        {{^messages}}<tr><td colspan="8">The queue is empty.</td></tr>{{/messages}}
        </tbody></table>
        {{#operator}}<h2>By destination and age (pending recipients)</h2>
        <table id="shape-table"><thead><tr><th>Domain</th><th class="num">Total</th>{{#bucketHeaders}}<th class="num">{{.}}</th>{{/bucketHeaders}}</tr></thead><tbody>
        {{#shape}}<tr><td>{{domain}}</td><td class="num">{{total}}</td>{{#buckets}}<td class="num">{{.}}</td>{{/buckets}}</tr>{{/shape}}
        </tbody></table>
        <h2>Outbound destinations</h2>
        <table id="destinations-table"><thead><tr><th>Destination</th><th class="num">Window</th><th class="num">Sessions</th><th class="num">Waiting</th><th class="num">Delivered</th><th class="num">Deferred</th><th class="num">Throttles</th><th>Parked until</th><th>Last error</th></tr></thead><tbody>
        {{#destinations}}<tr><td>{{key}}</td><td class="num">{{window}}</td><td class="num">{{sessions}}</td><td class="num">{{waiting}}</td><td class="num">{{delivered}}</td><td class="num">{{deferred}}</td><td class="num">{{throttles}}</td><td>{{parkedUntil}}</td><td>{{lastError}}</td></tr>{{/destinations}}
        {{^destinations}}<tr><td colspan="9">No outbound destinations yet.</td></tr>{{/destinations}}
        </tbody></table>{{/operator}}
        {{> foot}}
        """

    static let message = """
        {{> head}}
        <h1>Message {{id}}</h1>
        {{#notice}}<p class="notice" id="notice">{{notice}}</p>{{/notice}}
        <div class="actions" id="actions">
        {{#actions}}<form method="post" action="/queue/{{id}}/{{action}}"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" class="{{#danger}}danger{{/danger}}" id="action-{{action}}">{{label}}</button></form> {{/actions}}
        </div>
        <h2>Envelope</h2>
        <table id="envelope"><tbody>
        {{#envelope}}<tr><th>{{name}}</th><td>{{value}}</td></tr>{{/envelope}}
        </tbody></table>
        <h2>Recipients</h2>
        <table id="recipients"><thead><tr><th>Recipient</th><th>Route</th><th>Status</th><th class="num">Attempts</th><th>Last reply</th></tr></thead><tbody>
        {{#recipients}}<tr><td>{{address}}</td><td>{{route}}</td><td class="status-{{status}}">{{status}}</td><td class="num">{{attempts}}</td><td>{{lastReply}}</td></tr>{{/recipients}}
        </tbody></table>
        <h2>Events</h2>
        <table id="events"><thead><tr><th>Time</th><th>Event</th><th>Recipient</th><th>Detail</th></tr></thead><tbody>
        {{#events}}<tr><td>{{time}}</td><td>{{kind}}</td><td>{{recipient}}</td><td>{{detail}}</td></tr>{{/events}}
        </tbody></table>
        <h2>Headers</h2>
        <pre id="headers">{{headers}}</pre>
        {{> foot}}
        """

    static let trace = """
        {{> head}}
        <h1>Message trace</h1>
        <form class="filters" method="get" action="/trace" id="trace-form">
        {{#fields}}<label>{{label}}<input name="{{name}}" value="{{value}}" placeholder="{{placeholder}}"{{#readonly}} readonly{{/readonly}}></label>{{/fields}}
        <label>Status<select name="status">{{#statuses}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/statuses}}</select></label>
        <label>Direction<select name="direction">{{#directions}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/directions}}</select></label>
        <button type="submit" id="search">Search</button>
        </form>
        {{#error}}<p class="error">{{error}}</p>{{/error}}
        <p id="result-count">{{count}} result(s)</p>
        <table id="trace-table"><thead><tr><th>Received</th><th>Sender</th><th>Recipient</th><th>Subject</th><th>Status</th><th>Direction</th><th>Queue ID</th><th>Timeline</th></tr></thead><tbody>
        {{#rows}}<tr><td>{{received}}</td><td>{{sender}}</td><td>{{recipient}}</td><td>{{subject}}</td><td class="status-{{status}}">{{status}}</td><td>{{direction}}</td><td><a href="/queue/{{queueID}}">{{queueID}}</a></td>
        <td><details><summary>{{eventCount}} event(s){{#lastReply}}: {{lastReply}}{{/lastReply}}</summary><ul>{{#events}}<li>{{time}} <strong>{{kind}}</strong> {{detail}}</li>{{/events}}</ul></details></td></tr>{{/rows}}
        </tbody></table>
        {{> foot}}
        """

    static let forests = """
        {{> head}}
        <h1>Forests &amp; tenants</h1>
        <div class="cards"><div class="card" data-card="connections"><div class="n">{{connections}} / {{maxConnections}}</div><div class="l">SMTP sessions, server-wide</div></div></div>
        <h2>Resource forests</h2>
        <table id="forests-table"><thead><tr><th>Forest</th><th>Region</th><th>Sessions</th><th class="num">Limit</th><th class="num">Messages/min limit</th><th class="num">Refused</th></tr></thead><tbody>
        {{#forests}}<tr data-forest="{{name}}"><td>{{name}}</td><td>{{region}}</td><td><span class="meter"><span class="{{#hot}}hot{{/hot}}" style="width:{{percent}}%"></span></span> {{sessions}}</td><td class="num">{{maxConnections}}</td><td class="num">{{rate}}</td><td class="num">{{refused}}</td></tr>{{/forests}}
        </tbody></table>
        <h2>Tenants</h2>
        <table id="tenants-table"><thead><tr><th>Tenant</th><th>Domains</th><th>Forest</th><th class="num">Received (last hour)</th><th class="num">Pending recipients</th><th class="num">Max message size</th></tr></thead><tbody>
        {{#tenants}}<tr data-tenant="{{name}}"><td>{{name}}</td><td>{{domains}}</td><td>{{forest}}</td><td class="num">{{received}}</td><td class="num">{{pending}}</td><td class="num">{{maxSize}}</td></tr>{{/tenants}}
        </tbody></table>
        <h2>Busiest sources</h2>
        <table id="sources-table"><thead><tr><th>Source</th><th>Sessions</th><th class="num">Limit</th></tr></thead><tbody>
        {{#sources}}<tr><td>{{source}}</td><td>{{sessions}}</td><td class="num">{{maxConnections}}</td></tr>{{/sources}}
        {{^sources}}<tr><td colspan="3">No sessions now.</td></tr>{{/sources}}
        </tbody></table>
        <h2>Refusals since start</h2>
        <table id="refusals-table"><thead><tr><th>Kind</th><th class="num">Count</th></tr></thead><tbody>
        {{#refusals}}<tr><td>{{kind}}</td><td class="num">{{count}}</td></tr>{{/refusals}}
        {{^refusals}}<tr><td colspan="2">None.</td></tr>{{/refusals}}
        </tbody></table>
        {{> foot}}
        """

    static let health = """
        {{> head}}
        <h1>Service health</h1>
        {{#notice}}<p class="notice" id="notice">{{notice}}</p>{{/notice}}
        <div class="cards" id="services">
        {{#services}}<div class="card" data-service="{{service}}" data-status="{{status}}"><div class="l">{{service}}</div><div class="n st-{{status}}">{{label}}</div><div class="l">{{#issues}}<a href="/health/issues/{{id}}">{{id}}</a>{{/issues}}</div></div>{{/services}}
        </div>
        <p><a class="button" href="/health/report" id="report-link">Report an issue</a></p>
        <h2>Open issues</h2>
        <table id="open-issues"><thead><tr><th class="nw">ID</th><th>Title</th><th class="nw">Classification</th><th class="nw">Status</th><th>Service</th><th>Start</th><th>Scope</th><th class="num nw">Reports</th></tr></thead><tbody>
        {{#open}}<tr data-issue="{{id}}"><td class="nw"><a href="/health/issues/{{id}}">{{id}}</a></td><td>{{title}}</td><td class="nw">{{classification}}</td><td class="nw st-{{status}}">{{statusLabel}}</td><td>{{service}}</td><td>{{start}}</td><td>{{scope}}</td><td class="num">{{reports}}</td></tr>{{/open}}
        {{^open}}<tr><td colspan="8">No open issues.</td></tr>{{/open}}
        </tbody></table>
        <h2>Ended in the last {{endedDays}} days</h2>
        <table id="ended-issues"><thead><tr><th class="nw">ID</th><th>Title</th><th class="nw">Classification</th><th class="nw">Status</th><th>Service</th><th>Start</th><th>End</th><th>Scope</th><th class="num nw">Reports</th></tr></thead><tbody>
        {{#ended}}<tr data-issue="{{id}}"><td class="nw"><a href="/health/issues/{{id}}">{{id}}</a></td><td>{{title}}</td><td class="nw">{{classification}}</td><td class="nw st-{{status}}">{{statusLabel}}</td><td>{{service}}</td><td>{{start}}</td><td>{{end}}</td><td>{{scope}}</td><td class="num">{{reports}}</td></tr>{{/ended}}
        {{^ended}}<tr><td colspan="9">None.</td></tr>{{/ended}}
        </tbody></table>
        {{> foot}}
        """

    static let healthIssue = """
        {{> head}}
        <h1>{{id}}: {{issueTitle}}</h1>
        {{#notice}}<p class="notice" id="notice">{{notice}}</p>{{/notice}}
        <table id="issue-fields"><tbody>
        {{#fields}}<tr><th>{{name}}</th><td>{{value}}</td></tr>{{/fields}}
        </tbody></table>
        <div class="charts" id="issue-charts">
        {{#chartShare}}<div class="chartbox"><h3>Failing share against its usual band</h3>{{{chartShare}}}</div>{{/chartShare}}
        <div class="chartbox"><h3>Timeline (impact and posts)</h3>{{{chartTimeline}}}</div>
        {{#chartReports}}<div class="chartbox"><h3>User reports by region</h3>{{{chartReports}}}</div>{{/chartReports}}
        </div>
        <h2>Scope</h2>
        <table id="issue-scope"><tbody>
        {{#scope}}<tr><th>{{name}}</th><td>{{value}}</td></tr>{{/scope}}
        {{#shares}}<tr><th>Peak failing share</th><td><span class="meter"><span class="hot" style="width:{{peakWidth}}%"></span></span> {{peak}}</td></tr>
        <tr><th>Usual failing share</th><td><span class="meter"><span style="width:{{baselineWidth}}%"></span></span> {{baseline}}</td></tr>{{/shares}}
        </tbody></table>
        <h2>Evidence</h2>
        <table id="issue-evidence"><tbody>
        {{#evidence}}<tr><th>{{name}}</th><td>{{value}}</td></tr>{{/evidence}}
        {{#related}}<tr><th>{{label}}</th><td><ul id="related">{{#list}}<li>{{.}}</li>{{/list}}</ul></td></tr>{{/related}}
        {{^evidence}}{{^related}}<tr><td>No telemetry behind this issue yet: user reports only.</td></tr>{{/related}}{{/evidence}}
        </tbody></table>
        <h2>Posts ({{postCount}}), newest first</h2>
        <div id="posts">
        {{#posts}}<article class="post post-{{kind}}" data-kind="{{kind}}"><h3>{{time}} · {{kindLabel}} · {{author}}</h3><pre>{{text}}</pre></article>{{/posts}}
        </div>
        {{#operator}}<h2>Add a post</h2>
        <form class="stack" method="post" action="/health/issues/{{id}}/posts" id="post-form">
        <input type="hidden" name="csrf" value="{{formCSRF}}">
        <label>Text<textarea name="text" id="post-text" rows="5" cols="80" maxlength="10000" required></textarea></label>
        <button type="submit" id="add-post">Add post</button>
        </form>
        <h2>Status</h2>
        {{#canSetStatus}}<form class="filters" method="post" action="/health/issues/{{id}}/status" id="status-form">
        <input type="hidden" name="csrf" value="{{formCSRF}}">
        <label>Status<select name="status" id="status-select">{{#statuses}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/statuses}}</select></label>
        <button type="submit" id="set-status">Change status</button>
        </form>{{/canSetStatus}}
        {{^canSetStatus}}<p>The post-incident review is published: the status is final.</p>{{/canSetStatus}}
        <h2>Post-incident review</h2>
        {{#review}}<form class="stack" method="post" action="/health/issues/{{id}}/review" id="review-form">
        <input type="hidden" name="csrf" value="{{csrf}}">
        <label>Review (a draft from what the monitor recorded; edit it before publishing)<textarea name="text" id="review-text" rows="14" cols="100">{{draft}}</textarea></label>
        <button type="submit" id="publish-review">Publish the review</button>
        </form>{{/review}}
        {{^review}}<p id="review-unavailable">A post-incident review is published once the service is restored.</p>{{/review}}{{/operator}}
        {{> foot}}
        """

    static let healthReport = """
        {{> head}}
        <h1>Report an issue</h1>
        <p>Tell us what your users see. A report that matches an open issue joins it; reports from several organisations in a region open an issue of their own.</p>
        {{#error}}<p class="error" id="report-error">{{error}}</p>{{/error}}
        <form class="stack" method="post" action="/health/report" id="report-form">
        <input type="hidden" name="csrf" value="{{csrf}}">
        <label>Tenant<input name="tenant" id="report-tenant" value="{{tenantValue}}" list="tenant-names" maxlength="200" required{{#tenantFixed}} readonly{{/tenantFixed}}></label>
        <datalist id="tenant-names">{{#tenants}}<option value="{{.}}">{{/tenants}}</datalist>
        <label>Region<input name="region" id="report-region" value="{{regionValue}}" list="region-names" maxlength="100" required></label>
        <datalist id="region-names">{{#regions}}<option value="{{.}}">{{/regions}}</datalist>
        <label>What happens<textarea name="text" id="report-text" rows="5" cols="80" maxlength="10000" required>{{textValue}}</textarea></label>
        <label>The error text users see (optional)<input name="error" id="report-errortext" value="{{errorValue}}" size="80" maxlength="2000"></label>
        <button type="submit" id="send-report">Send the report</button>
        </form>
        {{> foot}}
        """

    static let errorPage = """
        {{> head}}
        <h1>{{title}}</h1>
        <p class="error">{{message}}</p>
        {{> foot}}
        """

    static let diagnostics = """
        {{> head}}
        <h1>Diagnostics</h1>
        <form method="get" action="/diagnostics" class="filters" id="check-form">
        <label>Check<select name="kind" id="kind">{{#kinds}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/kinds}}</select></label>
        <label>Domain, host or IP address<input name="target" id="target" value="{{target}}" placeholder="example.org, mx1.example.org or 192.0.2.1" size="40" maxlength="253" required></label>
        <label>SMTP port (domain, host)<input name="port" id="port" value="{{port}}" placeholder="25" size="6" inputmode="numeric"></label>
        <label>DKIM selector (domain)<input name="dkim_selector" id="dkim-selector" value="{{dkimSelector}}" placeholder="selector1" size="14" maxlength="200"></label>
        <button type="submit" id="run-check">Run check</button>
        </form>
        <p>The same checks as <code>mailflow check</code>: only the named hosts and Mailflow's configured DNS servers are contacted; a check may take up to a minute.</p>
        {{#error}}<p class="error" id="check-error">{{error}}</p>{{/error}}
        {{#report}}
        <p class="verdict" id="verdict" data-verdict="{{verdict}}"><span class="badge badge-{{verdict}}">{{verdict}}</span> <strong>{{kind}} {{target}}</strong>: {{counts}} · took <span id="duration">{{duration}}</span> · started {{started}}</p>
        {{#groups}}<section class="check-group" data-category="{{category}}"><h2>{{label}}<span class="badge badge-{{worst}}">{{worst}}</span></h2>
        <table><thead><tr><th class="nw">Severity</th><th>Subject</th><th>Finding</th><th class="nw">Check</th><th class="nw">NCSC-NL</th></tr></thead><tbody>
        {{#findings}}<tr class="finding" data-check="{{check}}" data-severity="{{severity}}"><td class="nw"><span class="badge badge-{{severity}}">{{severity}}</span></td><td class="nw">{{subject}}</td><td>{{summary}}{{#detail}}<pre>{{detail}}</pre>{{/detail}}</td><td class="nw">{{check}}</td><td class="nw">{{ncsc}}</td></tr>{{/findings}}
        </tbody></table></section>{{/groups}}
        {{/report}}
        {{> foot}}
        """
}

/// Any `Optional`, whatever it wraps, seen through `Any`.
protocol OptionalValue {
    var wrappedValue: Any? { get }
}

extension Optional: OptionalValue {
    var wrappedValue: Any? { map { $0 as Any } }
}
