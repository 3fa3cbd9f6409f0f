// Console forms with fieldsets of a kind (targets, access rules): show the fieldsets of
// the kind chosen in the form's [data-kind-switch] select, hide the others. A fieldset's
// data-kind may name several kinds separated by spaces ("http mcp": an MCP server has
// the HTTP upstream fields too).
// Progressive enhancement only: without this script every fieldset shows, and the server
// validates the same way. A fieldset holding an error ([data-errors]) always shows.
// Loaded from a file (CSP script-src 'self'); re-applied after htmx swaps the form in.
(function () {
  "use strict";

  // The chosen kind: a target's kind select gives it directly; an access rule's target
  // select gives the data-kind of the chosen option ("" = every target: show all).
  function chosenKind(select) {
    if (select.dataset.kindSwitch === "rule") {
      var option = select.options[select.selectedIndex];
      return option && option.dataset.kind ? option.dataset.kind : "";
    }
    return select.value || "http";
  }

  function apply(form) {
    var select = form.querySelector("[data-kind-switch]");
    if (!select) return;
    var kind = chosenKind(select);
    form.querySelectorAll("fieldset[data-kind]").forEach(function (fieldset) {
      var kinds = fieldset.dataset.kind.split(/\s+/);
      fieldset.hidden = kind !== "" && kinds.indexOf(kind) < 0 &&
        !fieldset.hasAttribute("data-errors");
    });
    // Inputs whose label depends on the kind (the target's credential).
    if (kind === "") return;
    form.querySelectorAll("[data-label-" + kind + "]").forEach(function (input) {
      var label = input.id && form.querySelector("label[for='" + input.id + "']");
      if (label) label.textContent = input.getAttribute("data-label-" + kind) + ":";
    });
  }

  function applyAll() {
    document.querySelectorAll("form.console-form").forEach(apply);
  }

  document.addEventListener("change", function (ev) {
    var el = ev.target;
    if (el && el.matches && el.matches("[data-kind-switch]") && el.form) apply(el.form);
  });
  document.addEventListener("htmx:afterSettle", applyAll);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", applyAll);
  } else {
    applyAll();
  }
})();
