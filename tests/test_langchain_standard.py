"""LangChain's own standard tests (the ``langchain-tests`` package) for ``LiftChatModel``, the four tools and
``LiftRetriever``.

The unit tests build the classes without a model; the integration tests run them on the bundled model
(SmolLM2-135M) with a memory in a temporary folder, so they are marked ``slow``. Tests that do not apply are
turned off the library's way, through its properties (``has_tool_calling`` and the like), never deleted: the
library's ``test_no_overrides_DO_NOT_OVERRIDE`` checks that.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests, RetrieversIntegrationTests, ToolsIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests, ToolsUnitTests

from lift_tool.chat_model import LiftChatModel
from lift_tool.retriever import LiftRetriever
from lift_tool.tool import AbsorbDocument, ForgetDocument, ListDocuments, LiftMemory

NOTE = ("# The Bellmoor lighthouse\n\nThe Bellmoor lighthouse stands on Gull Rock. It was built in 1901 by the "
        "engineer Ada Quill and is painted red and white.")
FORGETTABLE = "# Forgettable note\n\nThe Forgettable note says that the ferry to Gull Rock leaves at nine."
ABSORBED = "# Harbour note\n\nThe harbour master of Bellmoor is Tom Reed; the harbour was dredged in 1955."


@pytest.fixture(scope="module")
def real_lift(real_model_dir, real_loaded, tmp_path_factory):
    """A memory on the bundled model (the session's loaded copy), holding one short note."""
    from lift_tool.config import Settings
    from lift_tool.lift import Lift

    home = tmp_path_factory.mktemp("standard-home")
    lift = Lift(Settings(model=str(real_model_dir), home=home, device="cpu", cache_dir=home / "cache"),
                model=real_loaded)
    lift.index(NOTE)
    from lift_tool.sample import sample_document_path

    lift.index(sample_document_path())  # many chunks, for the retriever's tests of k
    return lift


class _OnTheRealModel:
    """Hands the module's memory to the standard tests, whose parameters are properties, not fixtures."""

    lift: Any = None
    pytestmark = pytest.mark.slow

    @pytest.fixture(autouse=True)
    def _memory(self, real_lift):
        type(self).lift = real_lift


# ------------------------------------------------------------------------------------------- chat model


class _ChatModelCapabilities:
    """What LiftChatModel offers: text in, text out; no tools (small local models cannot call them), so no
    structured output either; no images, audio or PDF."""

    @property
    def chat_model_class(self) -> type[LiftChatModel]:
        return LiftChatModel

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True


class TestLiftChatModelStandardUnit(_ChatModelCapabilities, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict:
        return {}  # the shared memory of the environment, used only when the model is called (never, here)


class TestLiftChatModelStandardIntegration(_OnTheRealModel, _ChatModelCapabilities, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        return {"lift": self.lift, "max_new_tokens": 24}


# ------------------------------------------------------------------------------------------------ tools


class TestLiftMemoryStandardUnit(ToolsUnitTests):
    @property
    def tool_constructor(self):
        return LiftMemory

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"question": "Who built the Bellmoor lighthouse?"}


class TestAbsorbDocumentStandardUnit(ToolsUnitTests):
    @property
    def tool_constructor(self):
        return AbsorbDocument

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"text": ABSORBED, "route": "auto"}


class TestListDocumentsStandardUnit(ToolsUnitTests):
    @property
    def tool_constructor(self):
        return ListDocuments


class TestForgetDocumentStandardUnit(ToolsUnitTests):
    @property
    def tool_constructor(self):
        return ForgetDocument

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"document": "Forgettable note"}


class TestLiftMemoryStandardIntegration(_OnTheRealModel, ToolsIntegrationTests):
    @property
    def tool_constructor(self):
        return LiftMemory

    @property
    def tool_constructor_params(self) -> dict:
        return {"lift": self.lift, "max_new_tokens": 16}

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"question": "Who built the Bellmoor lighthouse?", "documents": ["The Bellmoor lighthouse"],
                "mode": "context"}


class TestAbsorbDocumentStandardIntegration(_OnTheRealModel, ToolsIntegrationTests):
    @property
    def tool_constructor(self):
        return AbsorbDocument

    @property
    def tool_constructor_params(self) -> dict:
        return {"lift": self.lift}

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"text": ABSORBED, "route": "auto"}  # short: routed to context, nothing to train


class TestListDocumentsStandardIntegration(_OnTheRealModel, ToolsIntegrationTests):
    @property
    def tool_constructor(self):
        return ListDocuments

    @property
    def tool_constructor_params(self) -> dict:
        return {"lift": self.lift}


class TestForgetDocumentStandardIntegration(_OnTheRealModel, ToolsIntegrationTests):
    @property
    def tool_constructor(self):
        return ForgetDocument

    @property
    def tool_constructor_params(self) -> dict:
        return {"lift": self.lift}

    @property
    def tool_invoke_params_example(self) -> dict:
        self.lift.index(FORGETTABLE)  # stored again before each call, so that every call forgets something
        return {"document": "Forgettable note"}


# -------------------------------------------------------------------------------------------- retriever


class TestLiftRetrieverStandardIntegration(_OnTheRealModel, RetrieversIntegrationTests):
    @property
    def retriever_constructor(self):
        return LiftRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"lift": self.lift}

    @property
    def retriever_query_example(self) -> str:
        return "Who founded Harrowmere?"
